//! A validated [`Batch`] to code. Infallible: every check happened before.
//!
//! The expansion is three nested scopes, so that nothing generated can
//! capture a name the caller wrote:
//!
//! ```text
//! {
//!     // 1. The caller's scope: `=> T` and the request expressions resolve
//!     //    here, before any generated name exists.
//!     type __batch_payment = Charge;          // one alias per `=> T`
//!     let requests = requests([post(..), ..]); // mixed-site local
//!     {
//!         // 2. The arms' scope: `Key` is the batch's key enum.
//!         enum Key { .. }
//!         let slots = {
//!             // 3. The results: `Succeeded`, `Results`, `Slots`, named
//!             //    only here (the arms see their types, not their names).
//!             struct Succeeded { payment: __batch_payment, .. }
//!             struct Results { payment: Result<__batch_payment, Error>, .. }
//!             struct Slots { .. } impl Slots for Slots { .. }
//!             Slots { .. }
//!         };
//!         with_arms(requests, slots, |event| match event {  // every arm in one closure:
//!             ArmEvent::Then(b, ok) => plain_arm(|| ..),    // they share captures
//!             ArmEvent::Finally(b, all) => async_arm(async move { .. }),
//!             ArmEvent::Before(..) => None,                 // arms not given
//!             ..
//!         })
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
    let aliases = output_aliases(batch);
    let requests = requests(batch);
    let key_enum = key_enum(batch);
    let slots = slots(batch);
    let dispatch = dispatch(batch);
    let rt = &batch.runtime;
    let requests_local = Ident::new("requests", Span::mixed_site());
    let slots_local = Ident::new("slots", Span::mixed_site());
    quote! {
        {
            #errors
            #aliases
            let #requests_local = #requests;
            {
                #key_enum
                let #slots_local = #slots;
                #rt::__private::with_arms(#requests_local, #slots_local, #dispatch)
            }
        }
    }
}

/// `type __batch_payment = Charge;` for each `=> T`: the user's type,
/// resolved in the caller's scope, under a name the generated structs use.
fn output_aliases(batch: &Batch) -> TokenStream {
    let aliases = batch.requests.iter().filter_map(|request| {
        let ty = request.output.as_ref()?;
        let alias = output_alias(request);
        Some(quote! {
            #[allow(non_camel_case_types)]
            type #alias = #ty;
        })
    });
    quote!(#(#aliases)*)
}

/// The alias of a request's `=> T`, spanned on `T` so that errors about the
/// type (not deserializable, unknown) point at what the user wrote.
fn output_alias(request: &CheckedRequest) -> Ident {
    let span = request
        .output
        .as_ref()
        .map_or_else(|| request.key.span(), Spanned::span);
    format_ident!("__batch_{}", key_name(&request.key), span = span)
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

/// The alias of `=> T`, otherwise the response.
fn output(rt: &TokenStream, request: &CheckedRequest) -> TokenStream {
    match &request.output {
        Some(_) => {
            let alias = output_alias(request);
            quote!(#alias)
        }
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

/// The result structs and the `Slots` implementation, in a block of their
/// own: the arms get their types by inference, never by name, so a user type
/// called `Results` stays the user's.
fn slots(batch: &Batch) -> TokenStream {
    let rt = &batch.runtime;
    let results = result_structs(batch);
    let p = quote!(#rt::__private);
    let keys: Vec<&Ident> = batch.requests.iter().map(|r| &r.key).collect();
    let count = keys.len();
    let indices: Vec<Literal> = (0..count).map(Literal::usize_unsuffixed).collect();
    let outputs = batch.requests.iter().map(|r| output(rt, r));
    let decoders = batch.requests.iter().map(|r| decoder(&p, r));
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
        use #p::json as __batch_json;

        #results

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

            #keep

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
            let alias = output_alias(request);
            let json = quote_spanned!(ty.span()=> __batch_json::<#alias>);
            quote!(#json(response))
        }
        None => quote!(#p::raw(response)),
    }
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
