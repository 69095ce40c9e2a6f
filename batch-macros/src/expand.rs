//! A validated [`Batch`] to code. Infallible: every check happened before.
//!
//! The expansion is three nested scopes, so that nothing generated can
//! capture a name the caller wrote:
//!
//! ```text
//! {
//!     // 1. The caller's scope: `=> T` and the request expressions resolve
//!     //    here, before any generated name exists.
//!     let __batch_payment = typed::<Charge>(); // one slot per `=> T` (mixed-site)
//!     let requests = requests([post(..), ..]);  // mixed-site local
//!     {
//!         // 2. The arms' scope: `Key` is the batch's key enum.
//!         enum Key { .. }
//!         let slots = {
//!             // 3. The results: `Succeeded`, `Results`, `Slots`, named
//!             //    only here (the arms see their types, not their names),
//!             //    generic over the `=> T` types: an item cannot name a
//!             //    type parameter of the function around it, a field can.
//!             struct Succeeded<Out0, ..> { payment: Out0, .. }
//!             struct Results<Out0, ..> { payment: Result<Out0, Error>, .. }
//!             struct Slots<Out0, ..> { payment: Typed<Out0>, .. } impl Slots for Slots<..> { .. }
//!             Slots { payment: __batch_payment, .. }
//!         };
//!         with_arms(requests, slots, |event| match event {  // every arm in one closure:
//!             ArmEvent::Then(b, ok) => plain_arm(|| ..),    // they share captures
//!             ArmEvent::Finally(b, all) => async_arm(async move { .. }),
//!             ArmEvent::Before(..) => None,                 // arms not given
//!             ..
//!         })
//!         // (without any arm: `without_arms(requests, slots)`)
//!     }
//! }
//! ```

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ExprClosure, Ident, Pat, ReturnType};

use crate::ast::{ArmKind, Batch, CheckedArm, CheckedRequest};

/// The expression `batch!` becomes; `errors` are emitted first, inside it.
pub fn expand(batch: &Batch, errors: Option<syn::Error>) -> TokenStream {
    let errors = errors.map(|errors| errors.to_compile_error());
    let typed = typed_slots(batch);
    let requests = requests(batch);
    let key_enum = key_enum(batch);
    let slots = slots(batch);
    let rt = &batch.runtime;
    let requests_local = Ident::new("requests", Span::mixed_site());
    let slots_local = Ident::new("slots", Span::mixed_site());
    // Without arms, the batch takes the engine's arm-free path (as a
    // `Batch::new` batch does) instead of a closure that answers every event.
    let batch_of = if batch.arms.is_empty() {
        quote!(#rt::__private::without_arms(#requests_local, #slots_local))
    } else {
        let dispatch = dispatch(batch);
        quote!(#rt::__private::with_arms(#requests_local, #slots_local, #dispatch))
    };
    quote! {
        {
            #errors
            #typed
            let #requests_local = #requests;
            {
                #key_enum
                let #slots_local = #slots;
                #batch_of
            }
        }
    }
}

/// `let __batch_payment = typed::<Charge>();` for each `=> T`: the slot,
/// made in the caller's scope, where `T` resolves (a type parameter of the
/// caller's function included) and must be `Deserialize`.
fn typed_slots(batch: &Batch) -> TokenStream {
    let p = private(batch);
    let slots = batch.requests.iter().filter_map(|request| {
        let ty = request.output.as_ref()?;
        let local = typed_local(request);
        // Spanned on `T`: "not deserializable" and "unknown type" point at it.
        let slot = quote_spanned!(ty.span()=> #p::typed::<#ty>());
        Some(quote!(let #local = #slot;))
    });
    quote!(#(#slots)*)
}

/// The local holding a typed entry's slot until the slots are built.
fn typed_local(request: &CheckedRequest) -> Ident {
    format_ident!(
        "__batch_{}",
        key_name(&request.key),
        span = Span::mixed_site()
    )
}

/// The generated structs' type parameter for each typed entry, in order.
fn type_params(batch: &Batch) -> Vec<Ident> {
    (0..batch.requests.iter().filter(|r| r.output.is_some()).count())
        .map(|i| format_ident!("Out{}", i, span = Span::mixed_site()))
        .collect()
}

/// Each entry's value type: its type parameter if typed, else the response.
fn outputs(batch: &Batch) -> Vec<TokenStream> {
    let rt = &batch.runtime;
    let mut params = type_params(batch).into_iter();
    batch
        .requests
        .iter()
        .map(|r| match &r.output {
            Some(_) => {
                let param = params.next().expect("one parameter per typed entry");
                quote!(#param)
            }
            None => quote!(#rt::Response),
        })
        .collect()
}

fn private(batch: &Batch) -> TokenStream {
    let rt = &batch.runtime;
    quote!(#rt::__private)
}

/// `enum Key`, its `Display` (the key as written), `as_str` and `ALL`.
fn key_enum(batch: &Batch) -> TokenStream {
    let variants: Vec<&Ident> = batch.requests.iter().map(|r| &r.variant).collect();
    let names = batch.requests.iter().map(|r| key_name(&r.key));
    let count = Literal::usize_unsuffixed(batch.requests.len());
    quote! {
        /// The keys of this batch, in definition order.
        #[derive(
            ::core::clone::Clone,
            ::core::marker::Copy,
            ::core::fmt::Debug,
            ::core::cmp::PartialEq,
            ::core::cmp::Eq,
            ::core::hash::Hash,
        )]
        enum Key {
            #(#variants,)*
        }

        impl Key {
            /// Every key, in definition order.
            const ALL: [Key; #count] = [#(Key::#variants),*];

            /// The key as written in `batch!`.
            const fn as_str(self) -> &'static str {
                match self {
                    #(Key::#variants => #names,)*
                }
            }
        }

        impl ::core::fmt::Display for Key {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.pad(self.as_str())
            }
        }
    }
}

/// `struct Succeeded` (plain values) and `struct Results` (`Result`s).
/// Fields are spanned on the keys, so `ok.paymnt` reads as a missing field.
fn result_structs(batch: &Batch) -> TokenStream {
    let rt = &batch.runtime;
    let keys: Vec<&Ident> = batch.requests.iter().map(|r| &r.key).collect();
    let outputs = outputs(batch);
    let params = type_params(batch);
    quote! {
        /// Every success value (`then |b, ok|`, `try_send`).
        #[allow(dead_code)]
        struct Succeeded<#(#params),*> {
            #(#keys: #outputs,)*
        }

        /// Every result (`finally |b, all|`, `send`).
        #[allow(dead_code)]
        struct Results<#(#params),*> {
            #(#keys: ::core::result::Result<#outputs, #rt::Error>,)*
        }
    }
}

/// The request expressions, each checked to be a `Request` where written.
fn requests(batch: &Batch) -> TokenStream {
    let rt = &batch.runtime;
    let checked = batch.requests.iter().map(|request| {
        let expr = &request.expr;
        // Spanned on the expression, so "not a request" points only there.
        let check = quote_spanned!(expr.span()=> __batch_request(#expr));
        quote! {
            {
                #[allow(unused_imports)]
                use #rt::__private::verbs::*;
                use #rt::__private::request as __batch_request;
                #check
            }
        }
    });
    quote!(#rt::__private::requests([#(#checked),*]))
}

/// The result structs and the `Slots` implementation, in a block of their
/// own: the arms get their types by inference, never by name, so a user type
/// called `Results` stays the user's.
fn slots(batch: &Batch) -> TokenStream {
    let results = result_structs(batch);
    let p = private(batch);
    let keys: Vec<&Ident> = batch.requests.iter().map(|r| &r.key).collect();
    let count = keys.len();
    let indices: Vec<Literal> = (0..count).map(Literal::usize_unsuffixed).collect();
    let params = type_params(batch);
    let slot_types = batch
        .requests
        .iter()
        .zip(outputs(batch))
        .map(|(r, output)| {
            if r.output.is_some() {
                quote!(#p::Typed<#output>)
            } else {
                quote!(#p::Slot<#output>)
            }
        });
    let decodes = batch.requests.iter().map(|r| {
        if r.output.is_some() {
            quote!(response)
        } else {
            quote!(#p::raw(response))
        }
    });
    let inits = batch.requests.iter().map(|r| {
        if r.output.is_some() {
            let local = typed_local(r);
            quote!(#local)
        } else {
            quote!(::core::default::Default::default())
        }
    });
    // Untyped entries keep the response itself: the engine moves it in.
    let (raw_indices, raw_keys): (Vec<Literal>, Vec<&Ident>) = batch
        .requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.output.is_none())
        .map(|(i, r)| (Literal::usize_unsuffixed(i), &r.key))
        .unzip();
    let keep = if raw_keys.is_empty() {
        // Every entry is decoded: the default hands the response back.
        TokenStream::new()
    } else {
        quote! {
            fn keep(
                &mut self,
                index: usize,
                response: #p::Response,
            ) -> ::core::result::Result<&#p::Response, #p::Response> {
                match index {
                    #(#raw_indices => #p::keep_raw(&mut self.#raw_keys, response),)*
                    _ => ::core::result::Result::Err(response),
                }
            }
        }
    };
    let locals: Vec<Ident> = keys
        .iter()
        .map(|&key| {
            let mut local = key.clone();
            local.set_span(Span::mixed_site());
            local
        })
        .collect();
    let finish = if keys.is_empty() {
        quote!(::core::result::Result::Ok(Succeeded {}))
    } else {
        quote! {
            match (#(self.#keys.into_result(),)*) {
                (#(::core::result::Result::Ok(#locals),)*) => {
                    ::core::result::Result::Ok(Succeeded { #(#keys: #locals),* })
                }
                (#(#locals,)*) => ::core::result::Result::Err(Results { #(#keys: #locals),* }),
            }
        }
    };
    let count = Literal::usize_unsuffixed(count);
    quote! {{
        #results

        struct Slots<#(#params),*> {
            #(#keys: #slot_types,)*
        }

        impl<#(#params),*> #p::Slots for Slots<#(#params),*> {
            type Key = Key;
            type AllOk = Succeeded<#(#params),*>;
            type All = Results<#(#params),*>;

            fn len(&self) -> usize {
                #count
            }

            fn key(&self, index: usize) -> Key {
                Key::ALL[index]
            }

            fn decode(
                &mut self,
                index: usize,
                response: &#p::Response,
            ) -> ::core::result::Result<(), #p::Error> {
                match index {
                    #(#indices => self.#keys.decode(#decodes),)*
                    _ => ::core::unreachable!(),
                }
            }

            #keep

            fn fail(&mut self, index: usize, error: #p::Error) {
                match index {
                    #(#indices => self.#keys.fail(error),)*
                    _ => ::core::unreachable!(),
                }
            }

            fn finish(self) -> ::core::result::Result<Self::AllOk, Self::All> {
                #finish
            }

            fn widen(ok: Self::AllOk) -> Self::All {
                Results { #(#keys: ::core::result::Result::Ok(ok.#keys)),* }
            }

            fn first_error(all: Self::All) -> ::core::result::Result<Self::AllOk, #p::Error> {
                ::core::result::Result::Ok(Succeeded { #(#keys: all.#keys?),* })
            }
        }

        Slots { #(#keys: #inits),* }
    }}
}

/// `|event| match event { .. }`: every arm in one closure, so that the arms
/// share what they capture; `with_arms` gives it its argument type. The
/// closure is `move` if any arm's closure is, and is spanned on the first
/// arm, so that the compiler's advice about the closure (add `move`) lands
/// on the user's arm rather than on our macro.
fn dispatch(batch: &Batch) -> TokenStream {
    let rt = &batch.runtime;
    let event = Ident::new("__event", Span::mixed_site());
    let capture = batch
        .arms
        .iter()
        .find_map(|arm| arm.closure.capture.as_ref());
    let arms = ArmKind::ALL.into_iter().map(|kind| {
        let given = batch.arms.iter().find(|arm| arm.kind == kind);
        match_arm(rt, kind, given)
    });
    let span = batch.arms.first().map_or_else(Span::call_site, |arm| {
        Span::call_site().located_at(arm.closure.or1_token.span)
    });
    quote_spanned! {span=>
        #capture |#event| match #event {
            #(#arms)*
        }
    }
}

/// One `ArmEvent::Kind(params..) => ..` of the dispatch closure; an arm
/// not given does nothing.
fn match_arm(rt: &TokenStream, kind: ArmKind, arm: Option<&CheckedArm>) -> TokenStream {
    let variant = format_ident!("{}", variant_name(kind));
    let event = quote!(#rt::__private::ArmEvent::#variant);
    let Some(arm) = arm else {
        return quote!(#event(..) => ::core::option::Option::None,);
    };
    let closure = &arm.closure;
    let mut patterns = Vec::new();
    let mut lets = Vec::new();
    for (index, param) in closure.inputs.iter().enumerate() {
        match param {
            // `b`, `_`: the pattern itself.
            Pat::Ident(ident) if ident.by_ref.is_none() && ident.subpat.is_none() => {
                patterns.push(quote!(#param));
            }
            Pat::Wild(_) => patterns.push(quote!(#param)),
            // `b: &BatchState`, `mut b`, `(..)`: a local, then the user's
            // `let`, so that types are checked and refutable patterns are
            // refused as in a closure.
            _ => {
                let local = Ident::new(
                    &format!("__arg{index}"),
                    Span::mixed_site().located_at(param.span()),
                );
                patterns.push(quote!(#local));
                lets.push(quote!(let #param = #local;));
            }
        }
    }
    let body = typed_body(closure);
    let run = if closure.asyncness.is_some() {
        // `async |..| body`: the body is the future; it owns the arguments.
        let future = quote_spanned!(closure.body.span()=> async move { #body });
        quote!(#rt::__private::async_arm(#future))
    } else if arm.is_async() {
        quote!(#rt::__private::async_arm(#body))
    } else {
        // A closure called at once, so that its body is checked (and
        // `return` works) as in a closure of its own.
        let closure = quote_spanned!(closure.body.span()=> || #body);
        quote!(#rt::__private::plain_arm(#closure))
    };
    quote! {
        #event(#(#patterns),*) => {
            #(#lets)*
            #run
        }
    }
}

/// The body, with the closure's `-> T` (if written) checked on it.
fn typed_body(closure: &ExprClosure) -> TokenStream {
    let body = &closure.body;
    match &closure.output {
        ReturnType::Default => quote!(#body),
        ReturnType::Type(_, ty) => {
            let out = Ident::new("__out", Span::mixed_site());
            quote!({ let #out: #ty = #body; #out })
        }
    }
}

/// `ArmEvent` variant of an arm: `Progress` for `progress`.
fn variant_name(kind: ArmKind) -> &'static str {
    match kind {
        ArmKind::Before => "Before",
        ArmKind::Progress => "Progress",
        ArmKind::Then => "Then",
        ArmKind::Catch => "Catch",
        ArmKind::Finally => "Finally",
    }
}

/// The key as written, without `r#`.
fn key_name(key: &Ident) -> String {
    syn::ext::IdentExt::unraw(key).to_string()
}
