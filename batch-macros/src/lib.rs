//! The `batch!` procedural macro. Depend on `batch-runtime`, which
//! re-exports it as `batch_runtime::batch!` and documents it there.
//!
//! # Grammar
//!
//! ```text
//! batch! {
//!     Entry ("," Entry)* ","?
//! }
//! Entry   := Request | Arm
//! Request := key ":" Expr ("=>" Type)?      key: a snake_case identifier
//! Arm     := ArmName Closure
//! ArmName := "before" | "progress" | "then" | "catch" | "finally"
//! Closure := "async"? "move"? "|" params "|" Expr
//! ```
//!
//! | arm | parameters | runs |
//! |---|---|---|
//! | `before` | `\|b\|` | once, before any request starts |
//! | `progress` | `\|b, key, response\|` | once per success, in completion order |
//! | `then` | `\|b, ok\|` | once, only if nothing failed |
//! | `catch` | `\|b, key, error\|` | once per failure, in completion order |
//! | `finally` | `\|b, all\|` | once, always, last |
//!
//! Every arm goes into one closure over the batch's events, so the arms
//! share what they capture. An arm whose body is an `async` block
//! (`|b, ok| async move { .. }`, or a block ending in one), or an `async`
//! closure, is awaited after it returns; every other arm is a plain
//! closure, done when it returns.
//!
//! The macro works in three stages, one module each: `parse` (tokens to
//! the model in `ast`), `validate` (every rule, all errors at once) and
//! `expand` (code generation, infallible). Generated code names the
//! runtime only through the path the `batch_runtime::batch!` trampoline
//! passes in (`$crate`), so renaming the dependency works.

use proc_macro::TokenStream;

mod ast;
mod expand;
mod parse;
mod validate;

#[cfg(test)]
mod tests;

/// Expands `batch_runtime::batch!`: `$crate; entries..`.
#[doc(hidden)]
#[proc_macro]
pub fn batch(input: TokenStream) -> TokenStream {
    expand_tokens(input.into()).into()
}

fn expand_tokens(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    match syn::parse2::<ast::Input>(input) {
        Ok(input) => {
            let (batch, errors) = validate::validate(input);
            expand::expand(&batch, errors.into_error())
        }
        Err(error) => {
            let error = error.to_compile_error();
            quote::quote!({ #error })
        }
    }
}
