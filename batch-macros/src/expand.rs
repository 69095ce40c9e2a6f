//! A validated [`Batch`] to code. Infallible: every check happened before.
//!
//! The expansion is one block expression:
//!
//! ```text
//! {
//!     enum Key { .. }          // visible to the arms: `match key { Key::Payment => .. }`
//!     struct Succeeded { .. }  // `then |b, ok|`: `ok.payment: Charge`
//!     struct Results { .. }    // `finally |b, all|` and `send`: `Result<Charge, Error>`
//!     let requests = ..;       // mixed-site local: user code cannot name it
//!     Batch::from_parts(
//!         requests,
//!         { struct Slots { .. } impl Slots for Slots { .. } Slots { .. } },
//!         Dispatch::new(|event| match event {   // every arm in one closure:
//!             ArmEvent::Then(b, ok) => plain_arm(|| ..),   // they share captures
//!             ArmEvent::Finally(b, all) => async_arm(async move { .. }),
//!             ArmEvent::Before(..) => None,                // arms not given
//!             ..
//!         }),
//!     )
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
    let key_enum = key_enum(batch);
    let results = result_structs(batch);
    let requests = requests(batch);
    let slots = slots(batch);
    let dispatch = dispatch(batch);
    let rt = &batch.runtime;
    let requests_local = Ident::new("requests", Span::mixed_site());
    quote! {
        {
            #errors
            #key_enum
            #results
            let #requests_local = #requests;
            #rt::__private::Batch::from_parts(#requests_local, #slots, #dispatch)
        }
    }
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
    let outputs: Vec<TokenStream> = batch.requests.iter().map(|r| output(rt, r)).collect();
    quote! {
        /// Every success value (`then |b, ok|`, `try_send`).
        #[allow(dead_code)]
        struct Succeeded {
            #(#keys: #outputs,)*
        }

        /// Every result (`finally |b, all|`, `send`).
        #[allow(dead_code)]
        struct Results {
            #(#keys: ::core::result::Result<#outputs, #rt::Error>,)*
        }
    }
}

/// `T` for `=> T`, otherwise the response.
fn output(rt: &TokenStream, request: &CheckedRequest) -> TokenStream {
    match &request.output {
        Some(ty) => quote!(#ty),
        None => quote!(#rt::Response),
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

/// The `Slots` implementation, in a block of its own so user code cannot
/// name it.
fn slots(batch: &Batch) -> TokenStream {
    let rt = &batch.runtime;
    let p = quote!(#rt::__private);
    let keys: Vec<&Ident> = batch.requests.iter().map(|r| &r.key).collect();
    let count = keys.len();
    let indices: Vec<Literal> = (0..count).map(Literal::usize_unsuffixed).collect();
    let outputs = batch.requests.iter().map(|r| output(rt, r));
    let decoders = batch.requests.iter().map(|r| decoder(&p, r));
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
        use #p::json as __batch_json;

        struct Slots {
            #(#keys: #p::Slot<#outputs>,)*
        }

        impl #p::Slots for Slots {
            type Key = Key;
            type AllOk = Succeeded;
            type All = Results;

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
                    #(#indices => self.#keys.decode(#decoders),)*
                    _ => ::core::unreachable!(),
                }
            }

            fn fail(&mut self, index: usize, error: #p::Error) {
                match index {
                    #(#indices => self.#keys.fail(error),)*
                    _ => ::core::unreachable!(),
                }
            }

            fn finish(self) -> ::core::result::Result<Succeeded, Results> {
                #finish
            }

            fn widen(ok: Succeeded) -> Results {
                Results { #(#keys: ::core::result::Result::Ok(ok.#keys)),* }
            }

            fn first_error(all: Results) -> ::core::result::Result<Succeeded, #p::Error> {
                ::core::result::Result::Ok(Succeeded { #(#keys: all.#keys?),* })
            }
        }

        Slots { #(#keys: ::core::default::Default::default()),* }
    }}
}

/// `json::<T>(response)`, with the `Deserialize` check spanned on `T`;
/// `raw(response)` without `=> T`.
fn decoder(p: &TokenStream, request: &CheckedRequest) -> TokenStream {
    match &request.output {
        Some(ty) => {
            let json = quote_spanned!(ty.span()=> __batch_json::<#ty>);
            quote!(#json(response))
        }
        None => quote!(#p::raw(response)),
    }
}

/// `Dispatch::new::<Key, Succeeded, Results>(|event| match event { .. })`:
/// every arm in one closure, so that the arms share what they capture.
/// The closure is `move` if any arm's closure is.
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
    quote! {
        #rt::__private::Dispatch::new::<Key, Succeeded, Results, #rt::__private::BoxedArm<'_>>(
            #capture |#event| match #event {
                #(#arms)*
            }
        )
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
