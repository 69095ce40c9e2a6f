//! `README.md` is what GitHub and crates.io show: `README.source.md` with
//! the lines rustdoc hides in its Rust blocks (`# use ..`, the fake's set-up)
//! taken out. The source is what runs as doctests
//! (`batch_runtime::ReadmeDoctests`); this test keeps the two in step.
//! After editing the source, `BATCH_BLESS_README=1 cargo test -p batch-tests
//! --test readme` writes `README.md` again.

use std::path::Path;

const BLESS: &str = "BATCH_BLESS_README";

/// Rustdoc's rule for one line of a Rust block: `# x` and a lone `#` are
/// hidden, `##x` shows as `#x`, anything else shows as written.
fn shown(line: &str) -> Option<String> {
    let trimmed = line.trim_start();
    if trimmed.starts_with("##") {
        Some(line.replacen("##", "#", 1))
    } else if trimmed == "#" || trimmed.starts_with("# ") {
        None
    } else {
        Some(line.to_owned())
    }
}

/// Whether rustdoc compiles a block with this fence info as Rust: no
/// language, `rust`, or only rustdoc's own attributes.
fn is_rust(info: &str) -> bool {
    const ATTRIBUTES: &[&str] = &[
        "rust",
        "no_run",
        "ignore",
        "should_panic",
        "compile_fail",
        "edition2018",
        "edition2021",
        "edition2024",
        "test_harness",
    ];
    info.split(',')
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .all(|token| ATTRIBUTES.contains(&token))
}

/// `source` as a reader sees it: the Rust blocks' hidden lines removed,
/// everything else byte for byte, under a note on where to edit it.
fn rendered(source: &str) -> String {
    let mut out = String::from(
        "<!-- Generated from README.source.md, without the lines rustdoc hides: \
         edit that file, then run `BATCH_BLESS_README=1 cargo test -p batch-tests \
         --test readme`. -->\n",
    );
    let mut in_rust = None;
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(fence) = trimmed.strip_prefix("```") {
            in_rust = match in_rust {
                None => Some(is_rust(fence.trim())),
                Some(_) => None,
            };
            out.push_str(line);
            continue;
        }
        match in_rust {
            Some(true) => {
                let (text, end) = match line.strip_suffix('\n') {
                    Some(text) => (text, "\n"),
                    None => (line, ""),
                };
                if let Some(text) = shown(text) {
                    out.push_str(&text);
                    out.push_str(end);
                }
            }
            _ => out.push_str(line),
        }
    }
    out
}

#[test]
fn the_readme_is_its_source_without_the_hidden_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = std::fs::read_to_string(root.join("README.source.md")).unwrap();
    let readme_path = root.join("README.md");
    let expected = rendered(&source);
    if std::env::var_os(BLESS).is_some() {
        std::fs::write(&readme_path, &expected).unwrap();
        return;
    }
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    if readme != expected {
        let line = readme
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| readme.lines().count().min(expected.lines().count()))
            + 1;
        panic!(
            "README.md is not README.source.md without its hidden lines (first \
             difference at README.md line {line}); edit README.source.md, then run \
             `{BLESS}=1 cargo test -p batch-tests --test readme`"
        );
    }
}

#[test]
fn hidden_lines_go_and_everything_else_stays() {
    // Outside Rust blocks a leading `#` is text: a heading, a shell comment.
    const NOT_RUST: &str = "\
```sh
# a shell comment stays
```

```text
# so does this
```
";
    let source = format!(
        "\
# Title

```rust
# use a::b;
let x = 1;
#   .fake(&fake)
#
##[derive(Debug)]
    # indented hidden
#![allow(unused)]
```

{NOT_RUST}
```rust,no_run
# hidden
shown();
```
"
    );
    let got = rendered(&source);
    let body = got.split_once('\n').unwrap().1;
    assert_eq!(
        body,
        format!(
            "\
# Title

```rust
let x = 1;
#[derive(Debug)]
#![allow(unused)]
```

{NOT_RUST}
```rust,no_run
shown();
```
"
        )
    );
    assert!(got.starts_with("<!-- Generated from README.source.md"));
}

#[test]
fn a_block_is_rust_by_rustdocs_rules() {
    assert!(is_rust(""));
    assert!(is_rust("rust"));
    assert!(is_rust("rust,no_run"));
    assert!(is_rust("no_run"));
    assert!(is_rust("compile_fail, edition2021"));
    assert!(!is_rust("sh"));
    assert!(!is_rust("toml"));
    assert!(!is_rust("text"));
    assert!(!is_rust("rust,sh"));
}
