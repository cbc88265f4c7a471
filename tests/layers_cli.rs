//! `nixery layers` run as a real process on fixture files: the layers it
//! prints, and the single error line and exit status 2 on bad input.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use tempfile::TempDir;

fn p(name: &str) -> String {
    format!("/nix/store/{:0<32}-{name}", name.replace('-', ""))
}

/// The worked example of the layers module documentation.
fn git_and_htop() -> Value {
    let entry = |name: &str, size: u64, refs: &[&str]| {
        let mut references: Vec<String> = refs.iter().map(|r| p(r)).collect();
        references.push(p(name));
        json!({
            "path": p(name),
            "closureSize": size,
            "narSize": size / 2,
            "narHash": "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
            "references": references,
        })
    };
    const MB: u64 = 1_000_000;
    json!({
        "exportReferencesGraph": {"graph": [p("git"), p("htop"), p("nss-cacert")]},
        "graph": [
            entry("git", 120 * MB, &["curl", "perl", "glibc"]),
            entry("curl", 40 * MB, &["openssl", "glibc"]),
            entry("openssl", 35 * MB, &["glibc"]),
            entry("perl", 150 * MB, &["glibc"]),
            entry("htop", 36 * MB, &["ncurses", "glibc"]),
            entry("ncurses", 33 * MB, &["glibc"]),
            entry("glibc", 30 * MB, &[]),
            entry("nss-cacert", MB / 2, &[]),
        ],
    })
}

struct Fixtures(TempDir);

impl Fixtures {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn json(&self, name: &str, value: &Value) -> PathBuf {
        self.write(name, &value.to_string())
    }

    fn popularity(&self) -> PathBuf {
        self.json("popularity.json", &json!({"glibc": 300, "openssl": 60}))
    }
}

fn nixery_layers(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nixery"))
        .arg("layers")
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn sha1_hex(contents: &[String]) -> String {
    hex::encode(Sha1::digest(contents.join(":")))
}

/// Run successfully and return the printed layers as (rating, contents),
/// checking each printed key against the SHA-1 of its contents.
fn printed_layers(args: &[&str]) -> Vec<(u64, Vec<String>)> {
    let out = nixery_layers(args);
    assert!(
        out.status.success(),
        "status {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let layers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    layers
        .iter()
        .map(|layer| {
            let object = layer.as_object().unwrap();
            let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
            fields.sort_unstable();
            assert_eq!(fields, ["contents", "key", "merge_rating"]);
            let contents: Vec<String> = serde_json::from_value(layer["contents"].clone()).unwrap();
            assert_eq!(layer["key"], sha1_hex(&contents));
            (layer["merge_rating"].as_u64().unwrap(), contents)
        })
        .collect()
}

/// [`printed_layers`] of `graph` with the popularity file `popularity`,
/// then `more` arguments.
fn layers_with_popularity(
    graph: &Path,
    popularity: &Path,
    more: &[&str],
) -> Vec<(u64, Vec<String>)> {
    let mut args = vec![
        "--graph",
        path_arg(graph),
        "--popularity",
        path_arg(popularity),
    ];
    args.extend_from_slice(more);
    printed_layers(&args)
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| p(n)).collect()
}

#[test]
fn prints_merged_layers_in_final_order_with_keys_and_ratings() {
    let fixtures = Fixtures::new();
    let graph = fixtures.json("graph.json", &git_and_htop());
    let popularity = fixtures.popularity();
    let layers = layers_with_popularity(&graph, &popularity, &["--budget", "4"]);
    assert_eq!(
        layers,
        vec![
            (219_000_000, names(&["htop", "ncurses", "perl"])),
            (195_000_000, names(&["curl", "git", "openssl"])),
            (9_000_000_000, names(&["glibc"])),
            (250_000_000_000, names(&["nss-cacert"])),
        ]
    );
}

#[test]
fn accepts_a_whole_prepare_image_result_file() {
    let fixtures = Fixtures::new();
    let graph = fixtures.json("graph.json", &git_and_htop());
    let result = fixtures.json(
        "result.json",
        &json!({
            "runtimeGraph": git_and_htop(),
            "symlinkLayer": {"size": 10240, "tarHash": "00", "path": "/nix/store/x-symlink-layer"},
        }),
    );
    let popularity = fixtures.popularity();
    let from_graph = layers_with_popularity(&graph, &popularity, &[]);
    let from_result = layers_with_popularity(&result, &popularity, &[]);
    assert_eq!(from_graph.len(), 5);
    assert_eq!(from_graph, from_result);
}

#[test]
fn without_popularity_only_special_packages_are_popular() {
    let fixtures = Fixtures::new();
    let graph = fixtures.json("graph.json", &git_and_htop());
    let layers = printed_layers(&["--graph", path_arg(&graph), "--strategy", "popularity"]);
    // glibc is still shared, so still alone; it now rates 1 x 30 MB.
    assert_eq!(
        layers,
        vec![
            (30_000_000, names(&["glibc"])),
            (69_000_000, names(&["htop", "ncurses"])),
            (150_000_000, names(&["perl"])),
            (195_000_000, names(&["curl", "git", "openssl"])),
            (250_000_000_000, names(&["nss-cacert"])),
        ]
    );
}

#[test]
fn default_budget_is_the_servers_94() {
    let fixtures = Fixtures::new();
    let paths: Vec<String> = (0..100).map(|i| p(&format!("pkg-{i}"))).collect();
    let graph = json!({
        "exportReferencesGraph": {"graph": paths},
        "graph": paths.iter().map(|path| json!({"path": path, "closureSize": 1, "narSize": 1, "references": []})).collect::<Vec<_>>(),
    });
    let graph = fixtures.json("graph.json", &graph);
    let layers = printed_layers(&["--graph", path_arg(&graph), "--strategy", "popularity"]);
    assert_eq!(layers.len(), 94);
    assert_eq!(layers[0].1.len(), 7);
    // size-rank: 93 paths alone, the other 7 (none below another) in one.
    let layers = printed_layers(&["--graph", path_arg(&graph)]);
    assert_eq!(layers.len(), 94);
    assert_eq!(layers.iter().filter(|(_, c)| c.len() == 7).count(), 1);
}

/// The default without a map is size-rank. With budget 4 the three
/// largest paths (perl, git, curl by narSize) would leave a rest with paths
/// below them (openssl, glibc) and paths beside them (htop, ncurses,
/// nss-cacert), which takes two layers; so only perl and git stay alone.
#[test]
fn without_a_map_the_default_is_size_rank() {
    let fixtures = Fixtures::new();
    let graph = fixtures.json("graph.json", &git_and_htop());
    let layers = printed_layers(&["--graph", path_arg(&graph), "--budget", "4"]);
    let explicit = printed_layers(&[
        "--graph",
        path_arg(&graph),
        "--budget",
        "4",
        "--strategy",
        "size-rank",
    ]);
    assert_eq!(layers, explicit);
    const MB: u64 = 1_000_000;
    let below = |closure_size: u64| u64::MAX - closure_size;
    assert_eq!(
        layers,
        vec![
            (below(150 * MB), names(&["perl"])),
            (below(120 * MB), names(&["git"])),
            (below(40 * MB), names(&["curl", "glibc", "openssl"])),
            (below(36 * MB), names(&["htop", "ncurses", "nss-cacert"])),
        ]
    );
    // Budget 94: every path alone.
    let layers = printed_layers(&["--graph", path_arg(&graph)]);
    assert_eq!(layers.len(), 8);
    assert!(layers.iter().all(|(_, contents)| contents.len() == 1));
}

#[test]
fn every_strategy_is_shown_and_keeps_every_path_within_the_budget() {
    let fixtures = Fixtures::new();
    let graph = fixtures.json("graph.json", &git_and_htop());
    for strategy in ["popularity", "in-degree", "size-cohort", "size-rank"] {
        for budget in ["1", "3", "94"] {
            let layers = printed_layers(&[
                "--graph",
                path_arg(&graph),
                "--strategy",
                strategy,
                "--budget",
                budget,
            ]);
            assert!(
                layers.len() <= budget.parse().unwrap(),
                "{strategy} {budget}"
            );
            let mut all: Vec<String> = layers.into_iter().flat_map(|(_, c)| c).collect();
            all.sort();
            let mut expected = names(&[
                "curl",
                "git",
                "glibc",
                "htop",
                "ncurses",
                "nss-cacert",
                "openssl",
                "perl",
            ]);
            expected.sort();
            assert_eq!(all, expected, "{strategy} {budget}");
        }
    }
}

#[test]
fn unknown_strategy_and_unread_map_are_rejected() {
    let fixtures = Fixtures::new();
    let graph = fixtures.json("graph.json", &git_and_htop());
    let out = nixery_layers(&["--graph", path_arg(&graph), "--strategy", "fastest"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fastest") && stderr.contains("size-rank"),
        "{stderr}"
    );
    let popularity = fixtures.popularity();
    assert_rejected(
        &[
            "--graph",
            path_arg(&graph),
            "--popularity",
            path_arg(&popularity),
            "--strategy",
            "size-rank",
        ],
        &["--popularity", "size-rank"],
    );
}

#[test]
fn size_strategies_need_nar_sizes() {
    let fixtures = Fixtures::new();
    let mut graph = git_and_htop();
    graph["graph"][2].as_object_mut().unwrap().remove("narSize");
    let graph = fixtures.json("graph.json", &graph);
    assert_rejected(
        &["--graph", path_arg(&graph)],
        &["narSize", &p("openssl"), "size-rank"],
    );
    printed_layers(&["--graph", path_arg(&graph), "--strategy", "popularity"]);
}

#[test]
fn ratings_beyond_64_bits_are_printed_exactly() {
    let fixtures = Fixtures::new();
    let graph = json!({
        "exportReferencesGraph": {"graph": [p("huge")]},
        "graph": [{"path": p("huge"), "closureSize": u64::MAX, "references": []}],
    });
    let graph = fixtures.json("graph.json", &graph);
    let popularity = fixtures.json("pop.json", &json!({"huge": 1000}));
    let out = nixery_layers(&[
        "--graph",
        path_arg(&graph),
        "--popularity",
        path_arg(&popularity),
    ]);
    assert!(out.status.success());
    let expected = (u128::from(u64::MAX) * 1000).to_string();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("\"merge_rating\": {expected}")),
        "{stdout}"
    );
}

/// Run on bad input: exit status 2, nothing on stdout, and exactly one
/// stderr line, which contains every `expected` fragment.
fn assert_rejected(args: &[&str], expected: &[&str]) {
    let out = nixery_layers(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    for fragment in expected {
        assert!(stderr.contains(fragment), "{fragment:?} not in {stderr}");
    }
}

#[test]
fn unknown_reference_is_rejected_naming_it() {
    let fixtures = Fixtures::new();
    let mut graph = git_and_htop();
    graph["graph"][0]["references"]
        .as_array_mut()
        .unwrap()
        .push(json!(p("ghost")));
    let graph = fixtures.json("graph.json", &graph);
    assert_rejected(
        &["--graph", path_arg(&graph)],
        &[&p("ghost"), &p("git"), path_arg(&graph)],
    );
}

#[test]
fn missing_field_is_rejected_naming_it() {
    let fixtures = Fixtures::new();
    let mut graph = git_and_htop();
    graph["graph"][3]
        .as_object_mut()
        .unwrap()
        .remove("closureSize");
    let graph = fixtures.json("graph.json", &graph);
    assert_rejected(
        &["--graph", path_arg(&graph)],
        &["closureSize", path_arg(&graph)],
    );

    let result = fixtures.json("result.json", &json!({"runtimeGraph": {"graph": []}}));
    assert_rejected(&["--graph", path_arg(&result)], &["exportReferencesGraph"]);
}

#[test]
fn input_that_is_not_json_is_rejected() {
    let fixtures = Fixtures::new();
    let graph = fixtures.write("graph.json", "{\"graph\": [\n oops");
    assert_rejected(&["--graph", path_arg(&graph)], &["not JSON", "line 2"]);
    let graph = fixtures.write("list.json", "[1, 2]");
    assert_rejected(&["--graph", path_arg(&graph)], &["no JSON object"]);
}

#[test]
fn failed_prepare_image_result_is_rejected() {
    let fixtures = Fixtures::new();
    let result = fixtures.json(
        "result.json",
        &json!({"error": "not_found", "pkgs": ["nope"]}),
    );
    assert_rejected(&["--graph", path_arg(&result)], &["not_found"]);
}

#[test]
fn missing_top_level_path_is_rejected() {
    let fixtures = Fixtures::new();
    let mut graph = git_and_htop();
    graph["exportReferencesGraph"]["graph"]
        .as_array_mut()
        .unwrap()
        .push(json!(p("ghost")));
    let graph = fixtures.json("graph.json", &graph);
    assert_rejected(&["--graph", path_arg(&graph)], &["top-level", &p("ghost")]);
}

#[test]
fn unreadable_files_and_bad_popularity_are_rejected() {
    let fixtures = Fixtures::new();
    let graph = fixtures.json("graph.json", &git_and_htop());
    assert_rejected(
        &["--graph", "/nonexistent/graph.json"],
        &["/nonexistent/graph.json"],
    );
    let bad = fixtures.write("pop.json", r#"{"glibc": "many"}"#);
    assert_rejected(
        &["--graph", path_arg(&graph), "--popularity", path_arg(&bad)],
        &["popularity", path_arg(&bad)],
    );
    assert_rejected(
        &[
            "--graph",
            path_arg(&graph),
            "--popularity",
            "/nonexistent/pop.json",
        ],
        &["/nonexistent/pop.json"],
    );
}

#[test]
fn zero_budget_is_rejected() {
    let fixtures = Fixtures::new();
    let graph = fixtures.json("graph.json", &git_and_htop());
    assert_rejected(&["--graph", path_arg(&graph), "--budget", "0"], &["budget"]);
}
