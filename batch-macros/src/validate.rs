//! Semantic checks on a parsed [`Input`]. Each rule is a function; every
//! mistake of an invocation is collected, and the invalid entries are
//! dropped so that expansion still yields a usable batch (one mistake, one
//! error).

use std::collections::HashSet;

use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::{Expr, Ident};

use crate::ast::{Arm, ArmKind, Batch, CheckedArm, CheckedRequest, Input, Request};

/// Every error of one invocation, combined into one.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn into_error(self) -> Option<syn::Error> {
        self.0
    }
}

/// Checks `input`; returns what can be expanded and the errors, if any.
pub fn validate(input: Input) -> (Batch, Errors) {
    let mut errors = Errors::default();
    batch_is_not_empty(&input, &mut errors);

    let mut keys = HashSet::new();
    let mut variants = HashSet::new();
    let mut requests = Vec::new();
    for request in input.requests {
        keys_are_snake_case(&request, &mut errors);
        if !keys_are_unique(&request, &mut keys, &mut errors) {
            continue;
        }
        let Some(variant) = variants_are_unique(&request, &mut variants, &mut errors) else {
            continue;
        };
        requests.push(CheckedRequest {
            key: request.key,
            variant,
            expr: request.expr,
            output: request.output,
        });
    }

    let mut given = HashSet::new();
    let mut arms = Vec::new();
    for arm in input.arms {
        let Some(kind) = arms_are_known(&arm, &mut errors) else {
            continue;
        };
        let Some(closure) = arms_are_closures(arm.closure, kind, &mut errors) else {
            continue;
        };
        let arity_ok = arity_matches(&closure, kind, &mut errors);
        let first = arms_are_not_repeated(&arm.name, kind, &mut given, &mut errors);
        if arity_ok && first {
            arms.push(CheckedArm { kind, closure });
        }
    }

    arms_agree_on_move(&arms, &mut errors);

    let batch = Batch {
        runtime: input.runtime,
        requests,
        arms,
    };
    (batch, errors)
}

/// A batch without requests has no results to type, and is surely a mistake.
fn batch_is_not_empty(input: &Input, errors: &mut Errors) {
    if input.requests.is_empty() {
        errors.push(syn::Error::new(
            input.span,
            "a batch needs at least one request, as in `batch! { user: get(\"/users/7\") => User }`",
        ));
    }
}

/// Keys become fields (snake_case) and `Key` variants (UpperCamelCase).
fn keys_are_snake_case(request: &Request, errors: &mut Errors) {
    let key = request.key.unraw().to_string();
    let snake = key.chars().any(char::is_alphanumeric)
        && key
            .chars()
            .all(|c| c == '_' || c.is_numeric() || c.is_lowercase());
    if !snake {
        errors.push(syn::Error::new(
            request.key.span(),
            format!(
                "key `{key}` should be snake_case, as in `{}`: keys become fields of the results",
                to_snake_case(&key)
            ),
        ));
    }
}

/// Each key names one field of the results and one `Key` variant.
fn keys_are_unique(request: &Request, seen: &mut HashSet<String>, errors: &mut Errors) -> bool {
    let key = request.key.unraw().to_string();
    if seen.insert(key.clone()) {
        return true;
    }
    errors.push(syn::Error::new(
        request.key.span(),
        format!("duplicate key `{key}`: each request needs its own key"),
    ));
    false
}

/// Two keys must not become the same `Key` variant (`a_b` and `a__b`).
fn variants_are_unique(
    request: &Request,
    seen: &mut HashSet<String>,
    errors: &mut Errors,
) -> Option<Ident> {
    let key = request.key.unraw().to_string();
    let variant = to_upper_camel_case(&key);
    if variant.is_empty() || variant == "Self" {
        errors.push(syn::Error::new(
            request.key.span(),
            format!("key `{key}` cannot name a `Key` variant; choose another key"),
        ));
        return None;
    }
    if !seen.insert(variant.clone()) {
        errors.push(syn::Error::new(
            request.key.span(),
            format!(
                "key `{key}` and an earlier key both become `Key::{variant}`; choose distinct keys"
            ),
        ));
        return None;
    }
    Some(format_ident!("{}", variant, span = request.key.span()))
}

/// A misspelled arm would otherwise be silently ignored; suggest the nearest.
fn arms_are_known(arm: &Arm, errors: &mut Errors) -> Option<ArmKind> {
    if arm.kind.is_some() {
        return arm.kind;
    }
    let name = arm.name.to_string();
    let nearest = ArmKind::ALL
        .into_iter()
        .map(|kind| (edit_distance(&name, kind.name()), kind))
        .min_by_key(|(distance, _)| *distance)
        .filter(|(distance, kind)| *distance <= kind.name().len() / 3 + 1);
    let message = match nearest {
        Some((_, kind)) => format!("unknown arm `{name}`, did you mean `{}`?", kind.name()),
        None => format!(
            "unknown arm `{name}`; the arms are `before`, `progress`, `then`, `catch` and `finally`"
        ),
    };
    errors.push(syn::Error::new(arm.name.span(), message));
    None
}

/// The arm's signature is fixed; only a closure shows its parameters.
fn arms_are_closures(
    closure: Expr,
    kind: ArmKind,
    errors: &mut Errors,
) -> Option<syn::ExprClosure> {
    match closure {
        Expr::Closure(closure) => Some(closure),
        other => {
            errors.push(syn::Error::new_spanned(
                &other,
                format!(
                    "the `{name}` arm takes a closure, as in `{name} {sig} ..`",
                    name = kind.name(),
                    sig = kind.signature()
                ),
            ));
            None
        }
    }
}

/// The runtime calls each arm with a fixed set of arguments.
fn arity_matches(closure: &syn::ExprClosure, kind: ArmKind, errors: &mut Errors) -> bool {
    let expected = kind.params().len();
    let found = closure.inputs.len();
    if found == expected {
        return true;
    }
    let (or1, inputs, or2) = (&closure.or1_token, &closure.inputs, &closure.or2_token);
    errors.push(syn::Error::new_spanned(
        quote!(#or1 #inputs #or2),
        format!(
            "the `{name}` arm takes {expected} parameter{s} ({types}), as in `{name} {sig} ..`; \
             this closure takes {found}",
            name = kind.name(),
            s = if expected == 1 { "" } else { "s" },
            types = kind.param_types(),
            sig = kind.signature(),
        ),
    ));
    false
}

/// An arm runs one closure: a second one would silently replace the first.
fn arms_are_not_repeated(
    name: &Ident,
    kind: ArmKind,
    given: &mut HashSet<&'static str>,
    errors: &mut Errors,
) -> bool {
    if given.insert(kind.name()) {
        return true;
    }
    errors.push(syn::Error::new(
        name.span(),
        format!(
            "`{name}` is given twice; an arm runs one closure, so do both in one `{name} {sig} {{ .. }}`",
            sig = kind.signature()
        ),
    ));
    false
}

/// The arms become one closure, which either moves its captures or borrows
/// them: a `move` on some arms only would silently give the others copies.
fn arms_agree_on_move(arms: &[CheckedArm], errors: &mut Errors) {
    let Some(moving) = arms.iter().find(|arm| arm.closure.capture.is_some()) else {
        return;
    };
    for arm in arms.iter().filter(|arm| arm.closure.capture.is_none()) {
        errors.push(syn::Error::new(
            arm.closure.or1_token.span,
            format!(
                "`{}` borrows what it captures but `{}` is `move`: the arms share one closure, so write `move` on every arm or on none",
                arm.kind.name(),
                moving.kind.name()
            ),
        ));
    }
}

/// `payment_v2` → `PaymentV2`.
pub fn to_upper_camel_case(key: &str) -> String {
    key.split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect()
}

/// `PaymentV2` → `payment_v2`, for the suggestion.
fn to_snake_case(key: &str) -> String {
    let mut snake = String::new();
    for (i, c) in key.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 && !snake.ends_with('_') {
                snake.push('_');
            }
            snake.extend(c.to_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::Span;

    #[test]
    fn camel_case_capitalises_each_part() {
        assert_eq!(to_upper_camel_case("payment"), "Payment");
        assert_eq!(to_upper_camel_case("payment_v2"), "PaymentV2");
        assert_eq!(to_upper_camel_case("_x__y"), "XY");
    }

    #[test]
    fn snake_case_suggestion_splits_words() {
        assert_eq!(to_snake_case("PaymentV2"), "payment_v2");
        assert_eq!(to_snake_case("userId"), "user_id");
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("thn", "then"), 1);
        assert_eq!(edit_distance("finaly", "finally"), 1);
        assert_eq!(edit_distance("catch", "catch"), 0);
        assert_eq!(edit_distance("", "then"), 4);
    }

    #[test]
    fn span_free_errors_combine() {
        let mut errors = Errors::default();
        errors.push(syn::Error::new(Span::call_site(), "one"));
        errors.push(syn::Error::new(Span::call_site(), "two"));
        let messages: Vec<String> = errors
            .into_error()
            .into_iter()
            .flat_map(|e| e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .collect();
        assert_eq!(messages, ["one", "two"]);
    }
}
