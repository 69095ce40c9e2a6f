//! The batch engine's guarantees, against a real loopback upstream.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batch_runtime::{Batch, BatchState, Client, ErrorKind, Request};
use batch_tests::{refused_url, Upstream};
use futures::FutureExt;

fn client(upstream: &Upstream) -> Client {
    Client::builder()
        .base_url(upstream.base_url())
        .build()
        .expect("client builds")
}

/// Every arm appends `(arm, key, processed, pending, failed, finished)`.
type Log = Arc<Mutex<Vec<(String, String, usize, usize, usize, bool)>>>;

fn note(log: &Log, arm: &str, key: &str, b: &BatchState) {
    log.lock().unwrap().push((
        arm.to_owned(),
        key.to_owned(),
        b.processed_requests(),
        b.pending_requests(),
        b.failed_requests(),
        b.finished(),
    ));
}

#[tokio::test]
async fn lifecycle_arms_run_in_order_with_exact_counters() {
    let upstream = Upstream::start().await;
    let log: Log = Arc::default();
    let (l1, l2, l3, l4, l5) = (
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
    );
    let results = Batch::keyed([
        ("slow", Request::get("/delay/150")),
        ("fast", Request::get("/delay/10")),
        ("broken", Request::get("/status/500")),
    ])
    .before(move |b| note(&l1, "before", "", b))
    .progress(move |b, key, _| note(&l2, "progress", key, b))
    .catch(move |b, key, err| {
        assert_eq!(err.status().map(|s| s.as_u16()), Some(500));
        note(&l3, "catch", key, b);
    })
    .then(move |b, _| note(&l4, "then", "", b))
    .finally(move |b, all| {
        assert_eq!(all.len(), 3);
        note(&l5, "finally", "", b);
    })
    .send(&client(&upstream))
    .await;

    let log = log.lock().unwrap().clone();
    let arms: Vec<(&str, &str)> = log.iter().map(|e| (e.0.as_str(), e.1.as_str())).collect();
    // Completion order: the 500 and the 10 ms request race; the 150 ms one is last.
    assert_eq!(arms[0], ("before", ""));
    assert_eq!(arms[3], ("progress", "slow"));
    assert_eq!(arms[4], ("finally", ""));
    assert_eq!(arms.len(), 5, "then must not run after a failure: {arms:?}");
    let middle: Vec<_> = arms[1..3].to_vec();
    assert!(
        middle.contains(&("progress", "fast")) && middle.contains(&("catch", "broken")),
        "{middle:?}"
    );
    // Counters: nothing processed before; one more at each per-request arm;
    // finished with nothing pending at the end.
    assert_eq!((log[0].2, log[0].3, log[0].5), (0, 3, false));
    assert_eq!((log[1].2, log[1].3), (1, 2));
    assert_eq!((log[2].2, log[2].3), (2, 1));
    assert_eq!((log[3].2, log[3].3, log[3].4), (3, 0, 1));
    assert_eq!((log[4].2, log[4].3, log[4].4, log[4].5), (3, 0, 1, true));
    assert!(results["slow"].is_ok() && results["fast"].is_ok() && results["broken"].is_err());
}

#[tokio::test]
async fn then_runs_once_with_every_value_when_nothing_failed() {
    let upstream = Upstream::start().await;
    let mut then_calls = 0;
    let mut finally_saw_finished = false;
    let values = Batch::new((1..=4).map(|n| Request::get(format!("/json/{n}"))))
        .json::<serde_json::Value>()
        .then(|b, ok| {
            then_calls += 1;
            assert!(b.finished());
            assert_eq!(ok.len(), 4);
        })
        .finally(|b, _| finally_saw_finished = b.finished() && !b.has_failures())
        .try_send(&client(&upstream))
        .await
        .expect("all succeed");
    assert_eq!(then_calls, 1);
    assert!(finally_saw_finished);
    let ns: Vec<u64> = values.iter().map(|v| v["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn then_is_skipped_when_any_request_fails() {
    let upstream = Upstream::start().await;
    let mut then_ran = false;
    let mut finally_ran = 0;
    let results = Batch::new([
        Request::get("/json/1"),
        Request::get("/status/404"),
        Request::get("/json/2"),
    ])
    .then(|_, _| then_ran = true)
    .finally(|_, _| finally_ran += 1)
    .send(&client(&upstream))
    .await;
    assert!(!then_ran);
    assert_eq!(finally_ran, 1);
    assert!(results[1].as_ref().unwrap_err().is_status());
}

#[tokio::test]
async fn results_are_in_definition_order_when_completion_order_is_reversed() {
    let upstream = Upstream::start().await;
    let mut completion = Vec::new();
    let delays = [300, 200, 100, 0];
    let results = Batch::new(delays.map(|ms| Request::get(format!("/delay/{ms}"))))
        .json::<serde_json::Value>()
        .progress(|_, index, _| completion.push(index))
        .send(&client(&upstream))
        .await;
    assert_eq!(completion, vec![3, 2, 1, 0]);
    let got: Vec<u64> = results
        .iter()
        .map(|r| r.as_ref().unwrap()["delay"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![300, 200, 100, 0]);
}

#[tokio::test]
async fn concurrency_never_exceeds_the_limit_at_the_server() {
    let upstream = Upstream::start().await;
    let mut max_seen_by_arms = 0;
    let results = Batch::new((0..40).map(|_| Request::get("/delay/20")))
        .concurrency(5)
        .progress(|b, _, _| max_seen_by_arms = max_seen_by_arms.max(b.processed_requests()))
        .send(&client(&upstream))
        .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(upstream.hits(), 40);
    assert!(
        upstream.max_in_flight() <= 5,
        "server saw {}",
        upstream.max_in_flight()
    );
    assert!(upstream.max_in_flight() >= 2, "requests should overlap");
    assert_eq!(max_seen_by_arms, 40);
}

#[tokio::test]
async fn large_dynamic_batch_uses_the_default_limit() {
    let upstream = Upstream::start().await;
    let limit = batch_runtime::DEFAULT_CONCURRENCY;
    // Each request waits at the server until `limit` are there at once (or
    // 1 s passes), so the peak is the limit exactly: a smaller default never
    // gathers them, a larger one lets the extra request in as well.
    let requests = (0..=limit).map(|_| Request::get(format!("/gate/{limit}")));
    let results = tokio::time::timeout(
        Duration::from_secs(30),
        Batch::new(requests).send(&client(&upstream)),
    )
    .await
    .expect("a default limit below DEFAULT_CONCURRENCY serialises the gated requests");
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(upstream.hits(), limit + 1);
    assert_eq!(upstream.max_in_flight(), limit);
}

#[tokio::test]
async fn three_requests_of_200ms_run_concurrently_not_sequentially() {
    let upstream = Upstream::start().await;
    let started = Instant::now();
    let results = Batch::new((0..3).map(|_| Request::get("/delay/200")))
        .send(&client(&upstream))
        .await;
    let took = started.elapsed();
    assert!(results.iter().all(Result::is_ok));
    // Sequential would be >= 600 ms; generous bound for a loaded machine.
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

#[tokio::test]
async fn client_timeout_ends_a_hanging_request() {
    let upstream = Upstream::start().await;
    let client = Client::builder()
        .base_url(upstream.base_url())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.send(Request::get("/hang")).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains("/hang"), "{err}");
    // And the defaults are finite.
    assert_eq!(Client::new().timeout(), batch_runtime::DEFAULT_TIMEOUT);
    assert!(batch_runtime::DEFAULT_TIMEOUT <= Duration::from_secs(60));
}

#[tokio::test]
async fn per_request_timeout_overrides_the_default() {
    let upstream = Upstream::start().await;
    let results = Batch::keyed([
        ("patient", Request::get("/delay/50")),
        (
            "impatient",
            Request::get("/hang").timeout(Duration::from_millis(100)),
        ),
    ])
    .send(&client(&upstream))
    .await;
    assert!(results["patient"].is_ok());
    let err = results["impatient"].as_ref().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.key(), Some("impatient"));
}

#[tokio::test]
async fn deadline_fails_unfinished_requests_and_catch_sees_them() {
    let upstream = Upstream::start().await;
    let mut caught = Vec::new();
    let started = Instant::now();
    let results = Batch::keyed([
        ("quick", Request::get("/delay/10")),
        ("stuck", Request::get("/hang")),
    ])
    .deadline(Duration::from_millis(300))
    .catch(|_, key, err| caught.push((key, err.kind().clone())))
    .send(&client(&upstream))
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(results["quick"].is_ok());
    assert!(results["stuck"].as_ref().unwrap_err().is_timeout());
    assert_eq!(caught, vec![("stuck", ErrorKind::Deadline)]);
}

#[tokio::test]
async fn fail_fast_cancels_the_rest_without_catch() {
    let upstream = Upstream::start().await;
    let mut caught = Vec::new();
    let mut failed_at_finally = 0;
    let started = Instant::now();
    let results = Batch::keyed([
        ("a", Request::get("/hang")),
        ("b", Request::get("/status/503")),
        ("c", Request::get("/hang")),
        ("d", Request::get("/delay/10")),
    ])
    .concurrency(3)
    .fail_fast()
    .catch(|_, key, _| caught.push(key))
    .finally(|b, _| failed_at_finally = b.failed_requests())
    .send(&client(&upstream))
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancelled requests must not be awaited"
    );
    assert_eq!(caught, vec!["b"]);
    assert!(results["a"].as_ref().unwrap_err().is_cancelled());
    assert!(results["b"].as_ref().unwrap_err().is_status());
    assert!(results["c"].as_ref().unwrap_err().is_cancelled());
    // `d` was never started: concurrency 3, and `b` failed first.
    assert!(results["d"].as_ref().unwrap_err().is_cancelled());
    assert_eq!(failed_at_finally, 4);
    assert_eq!(upstream.hits(), 3);
}

#[tokio::test]
async fn retry_honours_retry_after_and_arms_see_only_the_final_attempt() {
    let upstream = Upstream::start().await;
    let mut progress_calls = 0;
    let mut catch_calls = 0;
    let started = Instant::now();
    let results = Batch::new([Request::get("/flaky/a/2/1")
        .retry(batch_runtime::Retry::times(3).backoff(Duration::from_millis(1)))])
    .json::<serde_json::Value>()
    .progress(|_, _, _| progress_calls += 1)
    .catch(|_, _, _| catch_calls += 1)
    .send(&client(&upstream))
    .await;
    let took = started.elapsed();
    let body = results[0].as_ref().expect("third attempt succeeds");
    assert_eq!(body["attempts"], 3);
    assert_eq!((progress_calls, catch_calls), (1, 0));
    // Two `Retry-After: 1` waits, not the 1 ms backoff.
    assert!(took >= Duration::from_millis(1900), "took {took:?}");
}

#[tokio::test]
async fn retry_after_beyond_the_cap_ends_the_retries() {
    let upstream = Upstream::start().await;
    let err = client(&upstream)
        .send(Request::get("/flaky/b/5/120").retry(batch_runtime::Retry::times(3)))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn panicking_arm_still_runs_finally_then_the_panic_resumes() {
    let upstream = Upstream::start().await;
    let finally_ran = Arc::new(Mutex::new(None));
    let seen = finally_ran.clone();
    let client = client(&upstream);
    let outcome = AssertUnwindSafe(
        Batch::new([Request::get("/json/1"), Request::get("/json/2")])
            .progress(|_, _, _| panic!("bug in progress"))
            .finally(move |b, all| {
                *seen.lock().unwrap() = Some((b.processed_requests(), all.len()))
            })
            .send(&client),
    )
    .catch_unwind()
    .await;
    let payload = outcome.expect_err("the panic resumes after finally");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"bug in progress"));
    // Both requests still completed; finally saw them all.
    assert_eq!(*finally_ran.lock().unwrap(), Some((2, 2)));
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn panicking_finally_resumes_too() {
    let upstream = Upstream::start().await;
    let client = client(&upstream);
    let outcome = AssertUnwindSafe(
        Batch::new([Request::get("/json/1")])
            .finally(|_, _| panic!("bug in finally"))
            .send(&client),
    )
    .catch_unwind()
    .await;
    let payload = outcome.expect_err("the panic in finally resumes");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"bug in finally"));
}

#[tokio::test]
async fn async_arms_await_inside_and_fnmut_arms_mutate_state() {
    let upstream = Upstream::start().await;
    let mut order = Vec::new();
    let log = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let async_log = log.clone();
    Batch::new([Request::get("/delay/30"), Request::get("/delay/1")])
        .before(|_| order.push("before"))
        .progress_async(|b, index, _| {
            // Copy out what the future needs; it must not borrow the arguments.
            let processed = b.processed_requests();
            let log = async_log.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                log.lock().await.push((index, processed));
            }
        })
        .send(&client(&upstream))
        .await;
    assert_eq!(order, vec!["before"]);
    assert_eq!(*log.lock().await, vec![(1, 1), (0, 2)]);
}

#[tokio::test]
async fn slow_arm_does_not_stall_requests_in_flight() {
    let upstream = Upstream::start().await;
    let started = Instant::now();
    let mut first = true;
    let results = Batch::new([Request::get("/delay/1"), Request::get("/delay/300")])
        .progress_async(|_, _, _| {
            let pause = if std::mem::take(&mut first) { 300 } else { 0 };
            tokio::time::sleep(Duration::from_millis(pause))
        })
        .send(&client(&upstream))
        .await;
    assert!(results.iter().all(Result::is_ok));
    // The 300 ms request ran while the 300 ms arm ran: ~300 ms, not ~600.
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn empty_batch_runs_before_then_finally() {
    // Several arms sharing state share it through a cell: they run one at
    // a time, never concurrently.
    let arms = std::cell::RefCell::new(Vec::new());
    let results = Batch::new(Vec::new())
        .before(|_| arms.borrow_mut().push("before"))
        .then(|_, _| arms.borrow_mut().push("then"))
        .finally(|b, _| {
            assert!(b.finished());
            arms.borrow_mut().push("finally");
        })
        .send(&Client::new())
        .await;
    assert!(results.is_empty());
    assert_eq!(arms.into_inner(), vec!["before", "then", "finally"]);
}

#[tokio::test]
async fn refused_connection_is_a_connect_failure_that_reaches_catch() {
    let url = refused_url().await;
    let mut caught = Vec::new();
    let results = Batch::keyed([("down", Request::get(format!("{url}/x")))])
        .catch(|_, key, err| caught.push((key, err.is_connect())))
        .send(&Client::new())
        .await;
    assert_eq!(caught, vec![("down", true)]);
    let err = results["down"].as_ref().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("request `down` GET http://127.0.0.1:"),
        "{err}"
    );
}

#[tokio::test]
async fn deadline_holds_while_an_async_arm_runs() {
    let upstream = Upstream::start().await;
    let mut caught = Vec::new();
    let started = Instant::now();
    let results = tokio::time::timeout(
        Duration::from_secs(10),
        Batch::keyed([
            ("quick", Request::get("/delay/10")),
            ("slow", Request::get("/delay/500")),
        ])
        .deadline(Duration::from_millis(100))
        .progress_async(|_, _, _| tokio::time::sleep(Duration::from_secs(1)))
        .catch(|b, key, err| caught.push((key, err.kind().clone(), b.processed_requests())))
        .send(&client(&upstream)),
    )
    .await
    .expect("the batch ends");
    let took = started.elapsed();
    assert!(results["quick"].is_ok(), "{:?}", results["quick"]);
    let err = results["slow"]
        .as_ref()
        .expect_err("500 ms is past the 100 ms deadline");
    assert_eq!(err.kind(), &ErrorKind::Deadline, "{err}");
    assert_eq!(caught, vec![("slow", ErrorKind::Deadline, 2)]);
    // The running arm is not cancelled (1 s), but no second arm runs for the
    // slow request: well under the 2 s of two arms.
    assert!(took >= Duration::from_millis(950), "took {took:?}");
    assert!(took < Duration::from_millis(1900), "took {took:?}");
}

#[tokio::test]
async fn deadline_drops_requests_in_flight_and_starts_none_while_an_arm_runs() {
    let upstream = Upstream::start().await;
    let mut hits_at_finally = None;
    let results = tokio::time::timeout(
        Duration::from_secs(10),
        // One at a time: `late` starts when `quick` completes, `queued` would
        // start when `late` completes, during the 400 ms arm, past the deadline.
        Batch::keyed([
            ("quick", Request::get("/delay/1")),
            ("late", Request::get("/delay/200")),
            ("queued", Request::get("/json/1")),
        ])
        .concurrency(1)
        .deadline(Duration::from_millis(100))
        .progress_async(|_, _, _| tokio::time::sleep(Duration::from_millis(400)))
        .finally(|_, _| hits_at_finally = Some(upstream.hits()))
        .send(&client(&upstream)),
    )
    .await
    .expect("the batch ends");
    let kinds: Vec<_> = results
        .values()
        .map(|r| r.as_ref().map(|_| ()).map_err(|e| e.kind().clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![Ok(()), Err(ErrorKind::Deadline), Err(ErrorKind::Deadline)]
    );
    // `queued` was never sent: nothing starts after the deadline.
    assert_eq!(hits_at_finally, Some(2));
}

#[derive(Debug)]
struct Explodes;

impl<'de> serde::Deserialize<'de> for Explodes {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("bug in Deserialize")
    }
}

/// Runs `batch`, expecting the panic to resume from `send`; returns its message.
async fn resumed_panic<T>(batch: impl std::future::Future<Output = T>) -> String {
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        AssertUnwindSafe(batch).catch_unwind(),
    )
    .await
    .expect("the batch ends");
    let payload = outcome.err().expect("the panic resumes from send");
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[tokio::test]
async fn panicking_retry_predicate_still_runs_finally_then_the_panic_resumes() {
    let upstream = Upstream::start().await;
    let client = client(&upstream);
    let finally_saw = Arc::new(Mutex::new(Vec::new()));
    let seen = finally_saw.clone();
    let message = resumed_panic(
        Batch::keyed([
            (
                "flaky",
                Request::get("/status/503")
                    .retry(batch_runtime::Retry::times(2).when(|_| panic!("bug in predicate"))),
            ),
            ("fine", Request::get("/delay/50")),
        ])
        .finally(move |b, all| {
            seen.lock().unwrap().push((
                b.processed_requests(),
                all["flaky"].is_err(),
                all["fine"].is_ok(),
            ))
        })
        .send(&client),
    )
    .await;
    assert_eq!(message, "bug in predicate");
    assert_eq!(*finally_saw.lock().unwrap(), vec![(2, true, true)]);
    assert_eq!(
        upstream.hits(),
        2,
        "the predicate panicked after the first attempt"
    );
}

#[tokio::test]
async fn panicking_fake_reply_still_runs_finally_then_the_panic_resumes() {
    use batch_runtime::fake::{Fake, Reply};
    use batch_runtime::Method;
    let fake = Fake::new();
    fake.stub_with(Method::GET, "*/boom", |_| panic!("bug in fake reply"));
    fake.stub(Method::GET, "*/ok", Reply::json(1));
    let client = fake.client();
    let mut finally_calls = Vec::new();
    let message = resumed_panic(
        Batch::keyed([
            ("boom", Request::get("http://svc.test/boom")),
            ("ok", Request::get("http://svc.test/ok")),
        ])
        .finally(|b, all| {
            finally_calls.push((
                b.processed_requests(),
                all["boom"].is_err(),
                all["ok"].is_ok(),
            ))
        })
        .send(&client),
    )
    .await;
    assert_eq!(message, "bug in fake reply");
    assert_eq!(finally_calls, vec![(2, true, true)]);
}

#[tokio::test]
async fn panicking_deserialize_still_runs_finally_then_the_panic_resumes() {
    use batch_runtime::fake::{Fake, Reply};
    use batch_runtime::Method;
    let fake = Fake::new();
    fake.stub(Method::GET, "*", Reply::json(1));
    let client = fake.client();
    let mut finally_calls = Vec::new();
    let mut caught = 0;
    let message = resumed_panic(
        Batch::new([
            Request::get("http://svc.test/a"),
            Request::get("http://svc.test/b"),
        ])
        .json::<Explodes>()
        .catch(|_, _, _| caught += 1)
        .finally(|b, all| {
            finally_calls.push((
                b.processed_requests(),
                all.iter().filter(|r| r.is_err()).count(),
            ))
        })
        .send(&client),
    )
    .await;
    assert_eq!(message, "bug in Deserialize");
    // Both decodes panicked; both slots are settled as failures. Arms other
    // than `finally` are skipped after a panic, as after an arm's.
    assert_eq!(finally_calls, vec![(2, 2)]);
    assert_eq!(caught, 0);
    assert_eq!(fake.recorded().len(), 2);
}

#[tokio::test]
async fn fail_fast_drops_every_request_in_flight_in_a_wide_batch() {
    // More than four in flight: each request has its own waker and lane.
    let upstream = Upstream::start().await;
    let mut requests: Vec<_> = (0..9)
        .map(|i| (format!("hang{i}"), Request::get("/hang")))
        .collect();
    requests.push(("broken".to_owned(), Request::get("/status/503")));
    requests.push(("later".to_owned(), Request::get("/json/1")));
    let results = tokio::time::timeout(
        Duration::from_secs(10),
        Batch::keyed(requests)
            .concurrency(10)
            .fail_fast()
            .send(&client(&upstream)),
    )
    .await
    .expect("cancelled requests are dropped, not awaited");
    let cancelled = results
        .values()
        .filter(|r| r.as_ref().is_err_and(|e| e.is_cancelled()))
        .count();
    assert_eq!(cancelled, 10, "nine hanging and the one never started");
    assert!(results["broken"].as_ref().unwrap_err().is_status());
    assert!(results["later"].as_ref().unwrap_err().is_cancelled());
    // `later` never started (some hanging ones may not have reached the
    // server before the failure either).
    assert!(upstream.hits() <= 10, "{}", upstream.hits());
}
