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
//!     Batch::from_slots(requests, { struct Slots { .. } impl Slots for Slots { .. } Slots { .. } })
//!         .then(|b, ok| ..)    // one call per arm, in the order written
//! }
//! ```

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use crate::ast::{Batch, CheckedArm, CheckedRequest};

/// The expression `batch!` becomes; `errors` are emitted first, inside it.
pub fn expand(batch: &Batch, errors: Option<syn::Error>) -> TokenStream {
    let errors = errors.map(|errors| errors.to_compile_error());
    let key_enum = key_enum(batch);
    let results = result_structs(batch);
    let requests = requests(batch);
    let slots = slots(batch);
    let arms = batch.arms.iter().map(arm);
    let rt = &batch.runtime;
    let requests_local = Ident::new("requests", Span::mixed_site());
    quote! {
        {
            #errors
            #key_enum
            #results
            let #requests_local = #requests;
            #rt::__private::Batch::from_slots(#requests_local, #slots)
                #(#arms)*
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
            #(#keys: #p::Outcome<#outputs>,)*
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

/// `.then(closure)` or `.then_async(closure)`.
fn arm(arm: &CheckedArm) -> TokenStream {
    let closure = &arm.closure;
    let method = if arm.is_async() {
        format_ident!("{}_async", arm.kind.name())
    } else {
        format_ident!("{}", arm.kind.name())
    };
    quote!(.#method(#closure))
}

/// The key as written, without `r#`.
fn key_name(key: &Ident) -> String {
    syn::ext::IdentExt::unraw(key).to_string()
}
