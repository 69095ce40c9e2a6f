//! Tokens to [`Input`]; the grammar is on [`Input`].

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, Token, Type};

use crate::ast::{Arm, ArmKind, Input, Request};

mod kw {
    syn::custom_keyword!(before);
    syn::custom_keyword!(progress);
    syn::custom_keyword!(then);
    syn::custom_keyword!(catch);
    syn::custom_keyword!(finally);
}

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let runtime = runtime_path(input)?;
        let mut requests = Vec::new();
        let mut arms = Vec::new();
        while !input.is_empty() {
            match entry(input)? {
                Entry::Request(request) => requests.push(*request),
                Entry::Arm(arm) => arms.push(arm),
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(Input {
            runtime,
            requests,
            arms,
            span: Span::call_site(),
        })
    }
}

/// Everything before the first `;`: `$crate` when called by the trampoline.
fn runtime_path(input: ParseStream) -> syn::Result<TokenStream> {
    input.step(|cursor| {
        let mut path = TokenStream::new();
        let mut rest = *cursor;
        while let Some((tree, next)) = rest.token_tree() {
            if let TokenTree::Punct(punct) = &tree {
                if punct.as_char() == ';' {
                    return Ok((path, next));
                }
            }
            path.extend([tree]);
            rest = next;
        }
        Err(cursor.error("`batch!` is called through `batch_runtime::batch!`"))
    })
}

enum Entry {
    Request(Box<Request>),
    Arm(Arm),
}

fn entry(input: ParseStream) -> syn::Result<Entry> {
    if input.peek(Ident::peek_any) && input.peek2(Token![:]) && !input.peek2(Token![::]) {
        return request(input).map(|r| Entry::Request(Box::new(r)));
    }
    let lookahead = input.lookahead1();
    let kind = if lookahead.peek(kw::before) {
        ArmKind::Before
    } else if lookahead.peek(kw::progress) {
        ArmKind::Progress
    } else if lookahead.peek(kw::then) {
        ArmKind::Then
    } else if lookahead.peek(kw::catch) {
        ArmKind::Catch
    } else if lookahead.peek(kw::finally) {
        ArmKind::Finally
    } else if input.peek(Ident) {
        return unknown_arm(input).map(Entry::Arm);
    } else {
        return Err(input.error(
            "expected a request `key: get(\"/path\")` or an arm \
             (`before`, `progress`, `then`, `catch`, `finally`)",
        ));
    };
    let name: Ident = input.parse()?;
    let closure: Expr = input.parse()?;
    Ok(Entry::Arm(Arm {
        name,
        kind: Some(kind),
        closure,
    }))
}

fn request(input: ParseStream) -> syn::Result<Request> {
    let key: Ident = input.parse()?;
    input.parse::<Token![:]>()?;
    let expr: Expr = input.parse()?;
    let output = if input.peek(Token![=>]) {
        input.parse::<Token![=>]>()?;
        Some(input.parse::<Type>()?)
    } else {
        None
    };
    Ok(Request { key, expr, output })
}

/// An identifier that is neither a key nor a known arm: an arm with a typo
/// when a closure follows, otherwise a key missing its `:`.
fn unknown_arm(input: ParseStream) -> syn::Result<Arm> {
    let name: Ident = input.parse()?;
    let closure_follows = input.peek(Token![|])
        || input.peek(Token![||])
        || input.peek(Token![async])
        || input.peek(Token![move]);
    if !closure_follows {
        return Err(input.error(format!(
            "expected `:` after the key `{name}`, as in `{name}: get(\"/path\")`"
        )));
    }
    let closure: Expr = input.parse()?;
    Ok(Arm {
        name,
        kind: None,
        closure,
    })
}
