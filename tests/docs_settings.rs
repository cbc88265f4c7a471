//! The documentation stays true to the code: the settings table lists
//! exactly the settings the server reads, every relative link in `docs/`
//! and the README leads to an existing file (and heading), and the worked
//! layering example shows what `nixery layers` really prints.
//!
//! The Markdown is scanned by hand rather than with a parser crate: the
//! pages are ours, use only inline links, tables and fenced code, and the
//! scan below (skipping code) is all these checks need.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Marks the one settings table in `docs/`: the table right after it.
const SETTINGS_MARKER: &str = "<!-- settings-table";

/// Marks a `nixery layers` output block: `budget=N` follows it.
const LAYERS_OUTPUT_MARKER: &str = "<!-- nixery-layers-output: budget=";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every `.md` file under `dir`, recursively, sorted.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Every environment variable the server reads, from the settings table
/// (`nixery::config`) and `RUST_LOG`.
fn settings_in_config() -> BTreeSet<String> {
    nixery::config::env_vars()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The first-column names of the settings table, and the page holding it.
fn settings_in_docs() -> (BTreeSet<String>, PathBuf) {
    let pages: Vec<(PathBuf, String)> = markdown_files(&root().join("docs"))
        .into_iter()
        .map(|p| {
            let text = read(&p);
            (p, text)
        })
        .filter(|(_, text)| text.contains(SETTINGS_MARKER))
        .collect();
    assert_eq!(
        pages.len(),
        1,
        "exactly one page in docs/ must hold the settings table (marked {SETTINGS_MARKER:?}), found {:?}",
        pages.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    let (page, text) = &pages[0];
    let after = &text[text.find(SETTINGS_MARKER).unwrap_or_default()..];
    let rows: Vec<&str> = after
        .lines()
        .skip(1)
        .take_while(|line| line.trim_start().starts_with('|'))
        .collect();
    assert!(
        rows.len() > 2,
        "no table follows the marker in {}",
        page.display()
    );
    let mut names = BTreeSet::new();
    // Skip the header and the |---| separator.
    for row in &rows[2..] {
        let first = row
            .trim()
            .trim_start_matches('|')
            .split('|')
            .next()
            .unwrap_or_default();
        let name = first.trim().trim_matches('`');
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "first cell of a settings row must be one `VARIABLE`: {row}"
        );
        assert!(names.insert(name.to_owned()), "{name} is listed twice");
    }
    (names, page.clone())
}

#[test]
fn every_setting_in_the_docs_table_exists_in_the_code() {
    let code = settings_in_config();
    let (docs, page) = settings_in_docs();
    let unknown: Vec<&String> = docs.iter().filter(|name| !code.contains(*name)).collect();
    assert!(
        unknown.is_empty(),
        "{} documents settings that the server does not read: {unknown:?}",
        page.display()
    );
}

#[test]
fn every_setting_in_the_code_is_in_the_docs_table() {
    let code = settings_in_config();
    assert!(
        code.len() >= 10,
        "found only {code:?} in nixery::config::env_vars()"
    );
    let (docs, page) = settings_in_docs();
    let missing: Vec<&String> = code.difference(&docs).collect();
    assert!(
        missing.is_empty(),
        "settings missing from the table in {}: {missing:?}",
        page.display()
    );
}

/// Text of `markdown` outside fenced code blocks and inline code spans,
/// line by line (code is blanked, so line numbers stay right).
fn prose_lines(markdown: &str) -> Vec<String> {
    let mut in_fence = false;
    markdown
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                return String::new();
            }
            if in_fence {
                return String::new();
            }
            let mut out = String::new();
            let mut in_code = false;
            for c in line.chars() {
                if c == '`' {
                    in_code = !in_code;
                } else if !in_code {
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

/// Targets of inline links `[text](target)` and images in `markdown`, with
/// their line numbers.
fn link_targets(markdown: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    for (number, line) in prose_lines(markdown).iter().enumerate() {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split_whitespace().next().unwrap_or_default();
            targets.push((number + 1, target.to_owned()));
            rest = &rest[end..];
        }
    }
    targets
}

/// The anchor a heading gets on GitHub and in mdBook: lower case, spaces to
/// `-`, only letters, digits, `-` and `_` kept.
fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Anchors of every heading of a Markdown file (code spans keep their text).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_fence = false;
    let mut found = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            found.insert(heading_anchor(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_relative_markdown_link_points_at_an_existing_file() {
    let mut pages = markdown_files(&root().join("docs"));
    pages.push(root().join("README.md"));
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = read(page);
        for (line, target) in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let resolved = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap_or(Path::new(".")).join(file)
            };
            let shown = format!(
                "{}:{line}: {target}",
                page.strip_prefix(root()).unwrap_or(page).display()
            );
            if !resolved.exists() {
                broken.push(format!("{shown} (no such file)"));
                continue;
            }
            if let Some(anchor) = anchor
                && resolved.extension().is_some_and(|ext| ext == "md")
                && !anchors(&read(&resolved)).contains(anchor)
            {
                broken.push(format!("{shown} (no such heading)"));
            }
        }
    }
    assert!(
        checked > 10,
        "found only {checked} relative links; is the scan broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn link_scan_finds_links_and_skips_code() {
    let text = "See [a](a.md#x) and [b](../b.md).\n`[c](c.md)`\n```\n[d](d.md)\n```\n";
    assert_eq!(
        link_targets(text),
        [(1, "a.md#x".to_owned()), (1, "../b.md".to_owned())]
    );
    assert_eq!(
        heading_anchor(" Computing a popularity map: `nixery popcount`"),
        "computing-a-popularity-map-nixery-popcount"
    );
}

/// The JSON block after each `nixery layers` marker in `internals.md`, with
/// its budget and, if the marker names one (`strategy=NAME`), its strategy.
fn documented_layer_outputs(markdown: &str) -> Vec<(String, Option<String>, serde_json::Value)> {
    let mut outputs = Vec::new();
    let mut rest = markdown;
    while let Some(at) = rest.find(LAYERS_OUTPUT_MARKER) {
        rest = &rest[at + LAYERS_OUTPUT_MARKER.len()..];
        let budget: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let strategy = rest[budget.len()..]
            .strip_prefix(" strategy=")
            .map(|r| r.chars().take_while(|c| !c.is_whitespace()).collect());
        let start = rest
            .find("```json\n")
            .expect("a ```json block after the marker")
            + 8;
        let end = start + rest[start..].find("```").expect("end of the json block");
        let value = serde_json::from_str(&rest[start..end])
            .unwrap_or_else(|e| panic!("documented output for budget {budget} is not JSON: {e}"));
        outputs.push((budget, strategy, value));
        rest = &rest[end..];
    }
    outputs
}

#[test]
fn layering_example_shows_what_nixery_layers_prints() {
    let page = root().join("docs/internals.md");
    let outputs = documented_layer_outputs(&read(&page));
    assert_eq!(
        outputs.len(),
        3,
        "expected the outputs for two budgets of popularity and one of size-rank"
    );
    for (budget, strategy, documented) in outputs {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nixery"));
        command.current_dir(root()).args([
            "layers",
            "--graph",
            "docs/examples/layering-graph.json",
            "--budget",
            &budget,
        ]);
        match &strategy {
            Some(strategy) => command.args(["--strategy", strategy]),
            None => command.args(["--popularity", "docs/examples/layering-popularity.json"]),
        };
        let run = support::run_output(&mut command);
        let actual: serde_json::Value =
            serde_json::from_slice(&run.stdout).expect("nixery layers prints JSON");
        assert_eq!(
            actual, documented,
            "docs/internals.md shows a different output for --budget {budget}"
        );
    }
}
