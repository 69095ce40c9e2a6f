//! The demos, run as a user runs them: `checkout` and `worker --demo-crash`
//! are started as processes and their output is checked. Cargo builds a
//! package's examples before it runs its tests (`cargo test --workspace`
//! or `-p batch-examples`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: each demo takes a few seconds.
const LIMIT: Duration = Duration::from_secs(120);

/// The built example `name`, beside this test binary's directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/demos-<hash> -> target/<profile>/examples/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps")
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built: run `cargo test -p batch-examples`, which builds the examples first",
        path.display()
    );
    path
}

/// Runs the example to its end (killed after [`LIMIT`]); its exit
/// success and stdout.
fn run(name: &str, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(example(name))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the example can be waited for") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("`{name} {args:?}` did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader
        .join()
        .expect("the reader thread")
        .expect("stdout is UTF-8");
    (status.success(), out)
}

/// The index of the first line containing `needle`.
fn line_of(out: &str, needle: &str) -> usize {
    out.lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line contains `{needle}`:\n{out}"))
}

/// What follows `prefix` on the first line containing it, up to `end`.
fn after<'a>(out: &'a str, prefix: &str, end: &str) -> &'a str {
    let line = out.lines().nth(line_of(out, prefix)).unwrap_or_default();
    let rest = &line[line.find(prefix).unwrap_or_default() + prefix.len()..];
    rest.split(end).next().unwrap_or_default()
}

fn assert_removed(db: &str, out: &str) {
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{db}{suffix}");
        assert!(!Path::new(&file).exists(), "{file} is left:\n{out}");
    }
}

#[test]
fn checkout_stores_each_shipment_before_its_response_runs_it_and_removes_the_store() {
    let (ok, out) = run("checkout", &[]);
    assert!(ok, "checkout failed:\n{out}");
    for order in 1..=4 {
        let stored = line_of(
            &out,
            &format!("order {order}: ShipOrder stored before the response"),
        );
        let response = line_of(&out, &format!("order {order}: response 200 OK"));
        let ran = line_of(&out, &format!("shop-worker: order {order}: ShipOrder ran"));
        assert!(stored < response && stored < ran, "order {order}:\n{out}");
        let stored_id = after(
            &out,
            &format!("order {order}: ShipOrder stored before the response (durable, stored id "),
            ")",
        );
        let ran_id = after(
            &out,
            &format!("order {order}: ShipOrder ran (durable, stored id "),
            ")",
        );
        assert_eq!(stored_id.len(), 26, "a ULID: {stored_id}");
        assert_eq!(stored_id, ran_id, "order {order}:\n{out}");
    }
    line_of(&out, "ship-order       4 / 4 / 0 / 0");
    line_of(
        &out,
        "durable store (pending / running / failed / done): 0 / 0 / 0 / 4",
    );
    assert_removed(after(&out, "durable jobs in ", "\n"), &out);
}

#[test]
fn the_crash_demo_passes_its_own_checks_and_removes_its_store() {
    let (ok, out) = run("worker", &["--demo-crash"]);
    assert!(ok, "the crash demo failed:\n{out}");
    line_of(&out, "kill -9 worker-1");
    line_of(
        &out,
        "jobs completed: 20 of 20 done in the store (0 failed)",
    );
    line_of(
        &out,
        "every job reached the warehouse: yes (20 of 20 orders",
    );
    line_of(&out, "all checks passed");
    assert!(!out.contains("PROBLEM"), "{out}");
    assert_removed(after(&out, "store: ", " (removed at exit)"), &out);
}
