//! [`IntoWorks`]: what [`Deferred::spawn_all`](super::Deferred::spawn_all)
//! takes — several deferred works in one call, of one type or of many.

use std::future::Future;
use std::pin::Pin;

use super::DeferSafe;

/// One work of a set, its type erased so that different futures fit one
/// call.
pub(crate) type BoxWork = Pin<Box<dyn Future<Output = ()> + Send>>;

mod sealed {
    pub trait Sealed {}
}

/// Several deferred works, for [`Deferred::spawn_all`](super::Deferred::spawn_all):
///
/// - a tuple of up to 12 futures, each of its own type
///   (`(async { .. }, async { .. }, send_receipt(id))`);
/// - an array or a `Vec` of futures of one type;
/// - `iter.map(|x| async move { .. })`.
///
/// Any other iterator goes to
/// [`Deferred::spawn_iter`](super::Deferred::spawn_iter). Each future must
/// be `Future<Output = ()> + Send + 'static`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a set of deferred works",
    label = "expected a tuple of futures, an array or `Vec` of futures, or `.map(..)` over an iterator",
    note = "every work must be `Future<Output = ()> + Send + 'static`; for any other iterator use `Deferred::spawn_iter`"
)]
pub trait IntoWorks: sealed::Sealed {
    #[doc(hidden)]
    fn into_works(self, push: &mut dyn FnMut(BoxWork));
}

macro_rules! tuple_works {
    ($($work:ident)+) => {
        impl<$($work),+> sealed::Sealed for ($($work,)+)
        where
            $($work: Future<Output = ()> + DeferSafe),+
        {}

        impl<$($work),+> IntoWorks for ($($work,)+)
        where
            $($work: Future<Output = ()> + DeferSafe),+
        {
            #[allow(non_snake_case)]
            fn into_works(self, push: &mut dyn FnMut(BoxWork)) {
                let ($($work,)+) = self;
                $(push(Box::pin($work));)+
            }
        }
    };
}

tuple_works!(A);
tuple_works!(A B);
tuple_works!(A B C);
tuple_works!(A B C D);
tuple_works!(A B C D E);
tuple_works!(A B C D E F);
tuple_works!(A B C D E F G);
tuple_works!(A B C D E F G H);
tuple_works!(A B C D E F G H I);
tuple_works!(A B C D E F G H I J);
tuple_works!(A B C D E F G H I J K);
tuple_works!(A B C D E F G H I J K L);

impl<W, const N: usize> sealed::Sealed for [W; N] where W: Future<Output = ()> + DeferSafe {}

impl<W, const N: usize> IntoWorks for [W; N]
where
    W: Future<Output = ()> + DeferSafe,
{
    fn into_works(self, push: &mut dyn FnMut(BoxWork)) {
        for work in self {
            push(Box::pin(work));
        }
    }
}

impl<W> sealed::Sealed for Vec<W> where W: Future<Output = ()> + DeferSafe {}

impl<W> IntoWorks for Vec<W>
where
    W: Future<Output = ()> + DeferSafe,
{
    fn into_works(self, push: &mut dyn FnMut(BoxWork)) {
        for work in self {
            push(Box::pin(work));
        }
    }
}

impl<I, G> sealed::Sealed for std::iter::Map<I, G>
where
    Self: Iterator,
    <Self as Iterator>::Item: Future<Output = ()> + DeferSafe,
{
}

impl<I, G> IntoWorks for std::iter::Map<I, G>
where
    Self: Iterator,
    <Self as Iterator>::Item: Future<Output = ()> + DeferSafe,
{
    fn into_works(self, push: &mut dyn FnMut(BoxWork)) {
        for work in self {
            push(Box::pin(work));
        }
    }
}
