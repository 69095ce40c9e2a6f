//! `batch!` end to end, against the loopback upstream and the fake: the
//! lifecycle guarantees of DESIGN.md, seen through the generated types.

use std::cell::RefCell;
use std::time::Duration;

use batch_runtime::fake::{Fake, Reply};
use batch_runtime::{batch, Client, Method};
use batch_tests::Upstream;

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Delay {
    delay: u64,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Numbered {
    n: u64,
}

fn fake_client(fake: &Fake) -> Client {
    Client::builder()
        .base_url("http://x.test")
        .fake(fake)
        .build()
        .expect("fake client")
}

fn upstream_client(upstream: &Upstream) -> Client {
    Client::builder()
        .base_url(upstream.base_url())
        .build()
        .expect("client")
}

/// The seed fake: inventory and payment answer after a delay (payment
/// last), warehouse answers at once.
fn checkout_fake(payment_status: u16) -> Fake {
    let fake = Fake::new();
    fake.stub(
        Method::POST,
        "*/inventory",
        Reply::json(serde_json::json!({ "n": 1 })).delay(Duration::from_millis(20)),
    );
    fake.stub(
        Method::POST,
        "*/payment",
        Reply::json(serde_json::json!({ "n": 2 }))
            .with_status(payment_status)
            .delay(Duration::from_millis(40)),
    );
    fake.stub(Method::POST, "*/warehouse", Reply::ok());
    fake
}

#[tokio::test]
async fn on_success_before_progress_then_finally_run_in_order_with_exact_counts() {
    let fake = checkout_fake(200);
    let events = RefCell::new(Vec::new());
    let log = |event: String| events.borrow_mut().push(event);

    let all = batch! {
        inventory: post("/inventory") => Numbered,
        payment: post("/payment") => Numbered,
        warehouse: post("/warehouse"),

        before |b| log(format!("before total={} pending={}", b.total_requests(), b.pending_requests())),
        progress |b, key, res| log(format!("progress {key} {} processed={}", res.status().as_u16(), b.processed_requests())),
        then |b, ok| log(format!("then n={} finished={}", ok.inventory.n + ok.payment.n, b.finished())),
        catch |_, key, _| log(format!("catch {key}")),
        finally |b, all| log(format!("finally failed={} ok={}", b.failed_requests(), all.payment.is_ok())),
    }
    .send(&fake_client(&fake))
    .await;

    assert_eq!(
        events.into_inner(),
        [
            "before total=3 pending=3",
            "progress warehouse 200 processed=1",
            "progress inventory 200 processed=2",
            "progress payment 200 processed=3",
            "then n=3 finished=true",
            "finally failed=0 ok=true",
        ]
    );
    assert_eq!(all.inventory.unwrap(), Numbered { n: 1 });
    assert_eq!(all.payment.unwrap(), Numbered { n: 2 });
    assert_eq!(all.warehouse.unwrap().status(), 200);
}

#[tokio::test]
async fn on_failure_then_is_skipped_catch_runs_once_and_finally_runs_last() {
    let fake = checkout_fake(402);
    let events = RefCell::new(Vec::new());
    let log = |event: String| events.borrow_mut().push(event);

    let all = batch! {
        inventory: post("/inventory") => Numbered,
        payment: post("/payment") => Numbered,
        warehouse: post("/warehouse"),

        then |_, _| log("then".into()),
        catch |b, key, err| match key {
            Key::Payment => log(format!("catch payment {} failed={}", err.status().unwrap().as_u16(), b.failed_requests())),
            Key::Inventory | Key::Warehouse => log(format!("catch {key}")),
        },
        finally |b, all| log(format!("finally has_failures={} payment_err={}", b.has_failures(), all.payment.is_err())),
    }
    .send(&fake_client(&fake))
    .await;

    assert_eq!(
        events.into_inner(),
        [
            "catch payment 402 failed=1",
            "finally has_failures=true payment_err=true",
        ]
    );
    let error = all.payment.unwrap_err();
    assert_eq!(error.key(), Some("payment"));
    assert_eq!(error.response().unwrap().text(), r#"{"n":2}"#);
    assert!(all.inventory.is_ok() && all.warehouse.is_ok());
}

#[tokio::test]
async fn results_are_in_definition_order_whatever_the_completion_order() {
    let upstream = Upstream::start().await;
    let mut completed = Vec::new();

    let all = batch! {
        slow: get("/delay/150") => Delay,
        medium: get("/delay/75") => Delay,
        fast: get("/delay/1") => Delay,

        progress |_, key, _| completed.push(key.to_string()),
    }
    .send(&upstream_client(&upstream))
    .await;

    assert_eq!(completed, ["fast", "medium", "slow"]);
    assert_eq!(all.slow.unwrap().delay, 150);
    assert_eq!(all.medium.unwrap().delay, 75);
    assert_eq!(all.fast.unwrap().delay, 1);
    assert_eq!(upstream.max_in_flight(), 3);
}

#[tokio::test]
async fn request_expressions_run_once_each_in_definition_order_before_any_arm() {
    let fake = Fake::new();
    fake.stub(Method::GET, "*", Reply::ok());
    let order = RefCell::new(Vec::new());
    let path = |name: &'static str| {
        order.borrow_mut().push(name);
        format!("/{name}")
    };

    let _ = batch! {
        first: get(path("first")),
        second: get(path("second")),
        third: get(path("third")),
        before |_| order.borrow_mut().push("before"),
    }
    .send(&fake_client(&fake))
    .await;

    assert_eq!(order.into_inner(), ["first", "second", "third", "before"]);
    fake.assert_sent_count(3);
}

#[tokio::test]
async fn each_arm_may_mutate_what_it_captures() {
    let fake = Fake::new();
    fake.stub(Method::GET, "*/ok/*", Reply::ok());
    fake.stub(Method::GET, "*/bad/*", Reply::status(500));
    let (mut befores, mut successes, mut failures) = (0, Vec::new(), Vec::new());
    let mut finished = None;

    let _ = batch! {
        a: get("/ok/a"),
        b: get("/bad/b"),
        c: get("/ok/c"),
        d: get("/bad/d"),
        before |_| befores += 1,
        progress |_, key, _| successes.push(key.as_str()),
        catch |_, key, _| failures.push(key.as_str()),
        finally |b, _| finished = Some(b.processed_requests()),
    }
    .send(&fake_client(&fake))
    .await;

    successes.sort_unstable();
    failures.sort_unstable();
    assert_eq!(befores, 1);
    assert_eq!(successes, ["a", "c"]);
    assert_eq!(failures, ["b", "d"]);
    assert_eq!(finished, Some(4));
}

#[tokio::test]
async fn async_arms_await_inside_and_run_before_the_next_arm() {
    let upstream = Upstream::start().await;
    let client = upstream_client(&upstream);
    let (client_ref, log) = (&client, &std::sync::Mutex::new(Vec::new()));

    let all = batch! {
        one: get("/json/1") => Numbered,
        two: get("/json/2") => Numbered,

        // The future may not borrow the arguments: copy out what it needs.
        progress |_, key, _| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            log.lock().unwrap().push(format!("progress {key}"));
        },
        then |_, ok| {
            let ns = [ok.one.n, ok.two.n];
            async move {
                for n in ns {
                    let sent = client_ref.send(batch_runtime::Request::post(format!("/record/then-{n}"))).await;
                    log.lock().unwrap().push(format!("then {n} {}", sent.is_ok()));
                }
            }
        },
        finally |b, _| log.lock().unwrap().push(format!("finally {}", b.processed_requests())),
    }
    .send(&client)
    .await;

    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 5, "{log:?}");
    assert!(log[..2].contains(&"progress one".to_string()), "{log:?}");
    assert!(log[..2].contains(&"progress two".to_string()), "{log:?}");
    assert_eq!(log[2..], ["then 1 true", "then 2 true", "finally 2"]);
    assert_eq!(upstream.recorded(), ["then-1", "then-2"]);
    assert_eq!(all.two.unwrap().n, 2);
}

#[tokio::test]
async fn typed_entries_decode_and_a_bad_body_is_a_decode_failure_of_that_key() {
    let upstream = Upstream::start().await;
    let mut caught = Vec::new();

    let all = batch! {
        good: get("/json/7") => Numbered,
        bad: get("/invalid-json") => Numbered,
        raw: get("/invalid-json"),
        catch |_, key, error| caught.push((key.to_string(), error.is_decode())),
    }
    .send(&upstream_client(&upstream))
    .await;

    assert_eq!(all.good.unwrap(), Numbered { n: 7 });
    let error = all.bad.unwrap_err();
    assert!(error.is_decode(), "{error}");
    assert_eq!(error.key(), Some("bad"));
    assert_eq!(all.raw.unwrap().text(), "not json");
    assert_eq!(caught, [("bad".to_string(), true)]);
}

#[tokio::test]
async fn try_send_gives_every_success_value_or_the_first_error_in_definition_order() {
    let upstream = Upstream::start().await;
    let client = upstream_client(&upstream);

    let ok = batch! {
        a: get("/json/1") => Numbered,
        b: get("/json/2") => Numbered,
    }
    .try_send(&client)
    .await
    .expect("both succeed");
    assert_eq!((ok.a.n, ok.b.n), (1, 2));

    // `second` fails first in time, `first` fails first in definition order.
    let error = batch! {
        first: get("/delay/80") => Numbered,
        second: get("/status/503"),
    }
    .try_send(&client)
    .await
    .err()
    .expect("both fail");
    assert_eq!(error.key(), Some("first"));
    assert!(error.is_decode());
}

#[tokio::test]
async fn options_chain_after_the_macro() {
    let upstream = Upstream::start().await;

    let all = batch! {
        a: get("/delay/20"),
        b: get("/delay/20"),
        c: get("/delay/20"),
    }
    .concurrency(1)
    .send(&upstream_client(&upstream))
    .await;

    assert!(all.a.is_ok() && all.b.is_ok() && all.c.is_ok());
    assert_eq!(upstream.max_in_flight(), 1);
}

#[tokio::test]
async fn keys_display_as_written_and_list_in_definition_order() {
    let fake = Fake::new();
    fake.stub(Method::GET, "*", Reply::ok());
    let mut seen = Vec::new();

    let _ = batch! {
        user_profile: get("/profile"),
        r#type: get("/type"),
        then |_, _| seen.extend(Key::ALL.map(|key| format!("{key}={key:?}={}", key.as_str()))),
    }
    .send(&fake_client(&fake))
    .await;

    assert_eq!(
        seen,
        ["user_profile=UserProfile=user_profile", "type=Type=type"]
    );
}

#[tokio::test]
async fn arms_share_captured_state() {
    let fake = checkout_fake(503);
    // One plain `Vec` and one counter, mutated by several arms: the arms
    // run one at a time, so no cell is needed.
    let mut log: Vec<String> = Vec::new();
    let mut calls = 0;
    let all = batch! {
        inventory: post("/inventory") => Numbered,
        payment: post("/payment") => Numbered,
        warehouse: post("/warehouse"),

        before   |_| { log.push("before".into()); calls += 1; },
        progress |_, key, _| { log.push(format!("ok {key}")); calls += 1; },
        catch    |_, key, err| { log.push(format!("failed {key} {}", err.status().map_or(0, |s| s.as_u16()))); calls += 1; },
        finally  |b, _| { log.push(format!("finally {}/{}", b.failed_requests(), b.total_requests())); calls += 1; },
    }
    .send(&fake_client(&fake))
    .await;
    assert_eq!(
        log,
        [
            "before",
            "ok warehouse",
            "ok inventory",
            "failed payment 503",
            "finally 1/3"
        ]
    );
    assert_eq!(calls, 5);
    assert_eq!(all.inventory.unwrap(), Numbered { n: 1 });
}

#[tokio::test]
async fn plain_and_async_arms_coexist_in_one_batch() {
    let fake = checkout_fake(200);
    let mut seen = Vec::new();
    let audited = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let audit = audited.clone();
    batch! {
        inventory: post("/inventory") => Numbered,
        warehouse: post("/warehouse"),

        progress |_, key, _| seen.push(key.as_str()),
        finally  |b, _| {
            let audit = audit.clone();
            let failed = b.failed_requests();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                audit.lock().unwrap().push(failed);
            }
        },
    }
    .send(&fake_client(&fake))
    .await;
    assert_eq!(seen, ["warehouse", "inventory"]);
    assert_eq!(*audited.lock().unwrap(), [0]);
}

/// A handler awaiting a batch must stay `Send` (axum requires it), with or
/// without arms, and with async arms that borrow from the handler.
#[test]
fn batch_futures_are_send_where_handlers_need_it() {
    fn assert_send<T: Send>(_: T) {}

    async fn no_arms(client: Client) -> bool {
        let all = batch! { a: get("/a"), b: get("/b") }.send(&client).await;
        all.a.is_ok()
    }

    async fn shared_plain_arms(client: Client) -> usize {
        let mut n = 0;
        let _ = batch! {
            a: get("/a"),
            progress |_, _, _| n += 1,
            catch |_, _, _| n += 10,
        }
        .send(&client)
        .await;
        n
    }

    async fn async_arm_borrowing(client: Client) -> usize {
        let log = std::sync::Mutex::new(Vec::new());
        let log = &log;
        let _ = batch! {
            a: get("/a"),
            progress |_, key, _| async move { log.lock().unwrap().push(key) },
        }
        .send(&client)
        .await;
        let n = log.lock().unwrap().len();
        n
    }

    let client = Fake::new().client();
    assert_send(no_arms(client.clone()));
    assert_send(shared_plain_arms(client.clone()));
    assert_send(async_arm_borrowing(client));
}

/// `=> T` may name type parameters of the function that writes `batch!`:
/// the generated result types are generic over them, and `then`, `send`
/// and `try_send` see the caller's types.
async fn fetch_two<A, B>(client: &Client, first: &str, second: &str) -> (A, B, usize)
where
    A: serde::de::DeserializeOwned,
    B: serde::de::DeserializeOwned + Clone,
{
    let mut seen_in_then = None;
    let all = batch! {
        first: get(first) => A,
        second: get(second) => B,
        raw: get(first),
        then |_, ok| seen_in_then = Some(ok.second.clone()),
    }
    .try_send(client)
    .await
    .expect("every request succeeds");
    assert!(seen_in_then.is_some(), "then ran with the caller's type");
    (all.first, all.second, all.raw.bytes().len())
}

#[tokio::test]
async fn typed_entries_may_be_generic_parameters_of_the_enclosing_function() {
    let upstream = Upstream::start().await;
    let client = upstream_client(&upstream);
    let (first, second, raw_len) =
        fetch_two::<Numbered, serde_json::Value>(&client, "/json/4", "/json/5").await;
    assert_eq!(first, Numbered { n: 4 });
    assert_eq!(second, serde_json::json!({ "n": 5 }));
    assert!(raw_len > 0);
}
