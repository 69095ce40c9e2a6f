//! Expansion snapshot: the generated code, parsed by syn and printed by
//! prettyplease, so a change to it is reviewed as readable Rust. Run with
//! `UPDATE_SNAPSHOTS=1` to rewrite `snapshots/*.rs`, then read the diff.

use std::path::PathBuf;

use quote::quote;

use crate::expand_tokens;

/// Expands `input` (with `::batch_runtime` as the runtime path) and prints
/// it as the body of a function.
fn pretty(input: proc_macro2::TokenStream) -> String {
    let output = expand_tokens(quote!(::batch_runtime; #input));
    let expr: syn::Expr = syn::parse2(output.clone())
        .unwrap_or_else(|e| panic!("the expansion is not an expression ({e}):\n{output}"));
    let file: syn::File = syn::parse_quote! {
        fn expansion() {
            let batch = #expr;
        }
    };
    prettyplease::unparse(&file)
}

/// Without whitespace and trailing commas, to match parts regardless of
/// how prettyplease wraps them.
fn squash(code: &str) -> String {
    let code: String = code.split_whitespace().collect();
    code.replace(",)", ")")
        .replace(",>", ">")
        .replace(",}", "}")
}

fn check_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(format!("{name}.rs"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "expansion of `{name}` changed; rerun with UPDATE_SNAPSHOTS=1 and review \
         {path:?}\n--- new expansion ---\n{actual}"
    );
}

#[test]
fn seed_expansion_is_readable_and_stable() {
    let pretty = pretty(quote! {
        inventory: post("/api/inventory/reserve").json(&reserve) => Reservation,
        payment: post("/api/payments/charge").json(&charge) => Charge,
        warehouse: post("/api/warehouse/notify").json(&notify),

        before |b| tracing::info!(total = b.total_requests()),
        then |_, ok| order.confirm(&ok.payment.confirmation),
        catch |_, key, _| match key {
            Key::Inventory => {}
            Key::Payment => {}
            Key::Warehouse => {}
        },
        finally |_, all| {
            let failed = all.payment.is_err();
            async move { audit.record(failed).await }
        },
    });
    check_snapshot("seed", &pretty);

    for part in [
        // `=> T` resolved in the caller's scope, before any generated name
        // (its slot made there, so `T` may be the caller's type parameter).
        "let __batch_inventory = ::batch_runtime::__private::typed::<Reservation>();",
        "let __batch_payment = ::batch_runtime::__private::typed::<Charge>();",
        "enum Key {\n        Inventory,\n        Payment,\n        Warehouse,\n    }",
        "Key::Inventory => \"inventory\"",
        // Generated structs are generic over the `=> T` types.
        "struct Succeeded<Out0, Out1> {\n        inventory: Out0,\n        payment: Out1,\n        warehouse: ::batch_runtime::Response",
        "payment: ::core::result::Result<Out1, ::batch_runtime::Error>",
        "inventory: ::batch_runtime::__private::Typed<Out0>",
        "impl<Out0, Out1> ::batch_runtime::__private::Slots for Slots<Out0, Out1>",
        "0 => self.inventory.decode(response),",
        "inventory: __batch_inventory,\n        payment: __batch_payment,\n        warehouse: ::core::default::Default::default()",
        "self.warehouse.decode(::batch_runtime::__private::raw(response))",
        "use ::batch_runtime::__private::verbs::*;",
        "use ::batch_runtime::__private::request as __batch_request; __batch_request(post(\"/api/payments/charge\").json(&charge))",
        "::batch_runtime::__private::with_arms(requests, slots, |__event| match __event {",
        "::batch_runtime::__private::ArmEvent::Before(b) => { ::batch_runtime::__private::plain_arm(|| { tracing::info!(total = b.total_requests()) }) }",
        "::batch_runtime::__private::ArmEvent::Progress(..) => { ::core::option::Option::None }",
        "::batch_runtime::__private::ArmEvent::Then(_, ok) => { ::batch_runtime::__private::plain_arm(|| { order.confirm(&ok.payment.confirmation) }) }",
        "::batch_runtime::__private::ArmEvent::Finally(_, all) => { ::batch_runtime::__private::async_arm({ let failed = all.payment.is_err(); async move { audit.record(failed).await } }) }",
        "::core::result::Result::Ok(Succeeded {\n                    inventory: all.inventory?,\n                    payment: all.payment?,\n                    warehouse: all.warehouse?",
    ] {
        assert!(
            squash(&pretty).contains(&squash(part)),
            "missing {part:?} in\n{pretty}"
        );
    }
    // The caller's types and requests come before every generated item, and
    // the result structs are named only inside the slots block.
    let alias = pretty.find("let __batch_payment").expect("typed slot");
    let requests = pretty.find("let requests").expect("requests");
    let key = pretty.find("enum Key").expect("Key");
    let results = pretty.find("struct Results").expect("Results");
    assert!(alias < key && requests < key && key < results, "{pretty}");
    // One closure holds every arm, so the arms share what they capture.
    assert_eq!(pretty.matches("with_arms").count(), 1, "{pretty}");
}

#[test]
fn mistakes_are_reported_together_and_the_rest_still_expands() {
    let output = expand_tokens(quote!(::batch_runtime;
        a: get("/a"),
        a: get("/b"),
        thn |_, _| (),
        catch |_| (),
    ))
    .to_string();
    let errors: Vec<&str> = output.matches("compile_error").collect();
    assert_eq!(errors.len(), 3, "{output}");
    assert!(output.contains("duplicate key `a`"), "{output}");
    assert!(output.contains("did you mean `then`?"), "{output}");
    assert!(output.contains("this closure takes 1"), "{output}");
    // The valid part is still expanded: one key, no arm.
    assert!(output.contains("enum Key { A , }"), "{output}");
    assert!(
        output.contains("without_arms") && !output.contains("with_arms"),
        "the invalid arms are dropped, so the batch has none: {output}"
    );
}

#[test]
fn a_syntax_error_is_one_error() {
    let output = expand_tokens(quote!(::batch_runtime; a get("/a"))).to_string();
    assert_eq!(output.matches("compile_error").count(), 1, "{output}");
    assert!(
        output.contains("expected `:` after the key `a`"),
        "{output}"
    );
}

#[test]
fn the_runtime_is_reached_only_through_the_path_the_trampoline_passes() {
    let output = expand_tokens(quote!(::renamed; a: get("/a") => T, then |_, _| ())).to_string();
    assert!(!output.contains("batch_runtime"), "{output}");
    assert!(
        output.contains(":: renamed :: __private :: with_arms"),
        "{output}"
    );
}
