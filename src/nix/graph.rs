//! The runtime graph of realised packages, read from the Nix store with one
//! `nix path-info --json --recursive --closure-size` over the packages'
//! store paths: every path of their closure with its references,
//! `narSize`, `narHash` and `closureSize`, the fields Nix's
//! `exportReferencesGraph` gave the Nix step before (a test compares the
//! two on a real build).
//!
//! Nix 2.8 prints a JSON array of objects with a `path` field; Nix 2.19
//! and later print an object keyed by path. Both are read. `narHash` is
//! kept as Nix writes it (SRI `sha256-<base64>` from `path-info`), which
//! the SBOM reads as well as `exportReferencesGraph`'s `sha256:<nix32>`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::layers::{ExportReferences, PathInfo, RuntimeGraph};

/// Arguments of `nix` before the store paths.
pub const PATH_INFO_ARGS: &[&str] = &[
    "--extra-experimental-features",
    "nix-command",
    "path-info",
    "--json",
    "--recursive",
    "--closure-size",
];

/// One path as `nix path-info --json` describes it.
#[derive(Deserialize)]
struct RawPathInfo {
    #[serde(default)]
    path: Option<String>,
    #[serde(rename = "narHash", default)]
    nar_hash: Option<String>,
    #[serde(rename = "narSize")]
    nar_size: Option<u64>,
    #[serde(default)]
    references: Vec<String>,
    #[serde(rename = "closureSize")]
    closure_size: Option<u64>,
    /// Nix 2.8 lists a path it does not have with `"valid": false`.
    #[serde(default = "valid_by_default")]
    valid: bool,
}

fn valid_by_default() -> bool {
    true
}

/// The two shapes of `nix path-info --json` output.
#[derive(Deserialize)]
#[serde(untagged)]
enum Output {
    /// Nix before 2.19: an array.
    List(Vec<RawPathInfo>),
    /// Nix 2.19 and later: keyed by path (`null` for an invalid path).
    Map(BTreeMap<String, Option<RawPathInfo>>),
}

/// The runtime graph of `tops` (the realised packages) from the output of
/// `nix path-info` over them. Every path must be valid and have its sizes;
/// the references of every path must be in the output.
pub fn parse(tops: &[String], output: &[u8]) -> Result<RuntimeGraph, String> {
    let parsed: Output = serde_json::from_slice(output)
        .map_err(|e| format!("nix path-info output is not the expected JSON: {e}"))?;
    let raw: Vec<(String, RawPathInfo)> = match parsed {
        Output::List(list) => list
            .into_iter()
            .map(|info| match info.path.clone() {
                Some(path) => Ok((path, info)),
                None => Err("a nix path-info entry has no path".to_string()),
            })
            .collect::<Result<_, _>>()?,
        Output::Map(map) => map
            .into_iter()
            .map(|(path, info)| match info {
                Some(info) => Ok((path, info)),
                None => Err(format!("{path} is not valid in the Nix store")),
            })
            .collect::<Result<_, _>>()?,
    };
    let mut graph = Vec::with_capacity(raw.len());
    for (path, info) in raw {
        if !info.valid {
            return Err(format!("{path} is not valid in the Nix store"));
        }
        let (Some(nar_size), Some(closure_size)) = (info.nar_size, info.closure_size) else {
            return Err(format!("nix path-info gave no sizes for {path}"));
        };
        graph.push(PathInfo {
            path,
            closure_size,
            nar_size: Some(nar_size),
            references: info.references,
            nar_hash: info.nar_hash,
        });
    }
    graph.sort_by(|a, b| a.path.cmp(&b.path));
    let known: std::collections::HashSet<&str> = graph.iter().map(|e| e.path.as_str()).collect();
    for top in tops {
        if !known.contains(top.as_str()) {
            return Err(format!("nix path-info did not describe {top}"));
        }
    }
    for entry in &graph {
        if let Some(missing) = entry
            .references
            .iter()
            .find(|r| !known.contains(r.as_str()))
        {
            return Err(format!(
                "nix path-info did not describe {missing}, a reference of {}",
                entry.path
            ));
        }
    }
    let mut tops = tops.to_vec();
    tops.sort();
    tops.dedup();
    Ok(RuntimeGraph {
        export_references_graph: ExportReferences { graph: tops },
        graph,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/aaaa-hello-2.12";
    const B: &str = "/nix/store/bbbb-glibc-2.40";

    #[test]
    fn nix_2_8_list_is_read() {
        let json = format!(
            r#"[{{"path":"{A}","narHash":"sha256-AAAA","narSize":10,"references":["{B}","{A}"],"closureSize":30,"deriver":"/nix/store/x.drv","registrationTime":1,"ultimate":true}},
                {{"path":"{B}","narHash":"sha256-BBBB","narSize":20,"references":[],"closureSize":20}}]"#
        );
        let graph = parse(&[A.to_string()], json.as_bytes()).unwrap();
        assert_eq!(graph.export_references_graph.graph, [A]);
        assert_eq!(
            graph.graph[0],
            PathInfo {
                path: A.into(),
                closure_size: 30,
                nar_size: Some(10),
                references: vec![B.into(), A.into()],
                nar_hash: Some("sha256-AAAA".into()),
            }
        );
        assert_eq!(graph.graph[1].path, B);
    }

    #[test]
    fn newer_nix_map_is_read() {
        let json = format!(
            r#"{{"{B}":{{"narHash":"sha256-BBBB","narSize":20,"references":[],"closureSize":20}},
                "{A}":{{"narHash":"sha256-AAAA","narSize":10,"references":["{B}"],"closureSize":30}}}}"#
        );
        let graph = parse(&[A.to_string()], json.as_bytes()).unwrap();
        assert_eq!(graph.graph.len(), 2);
        assert_eq!(graph.graph[0].closure_size, 30);
    }

    #[test]
    fn invalid_paths_missing_sizes_and_dangling_references_are_errors() {
        for json in [
            format!(r#"[{{"path":"{A}","valid":false}}]"#),
            format!(r#"{{"{A}":null}}"#),
            format!(r#"[{{"path":"{A}","narSize":1,"references":[]}}]"#),
            format!(r#"[{{"path":"{A}","narSize":1,"closureSize":1,"references":["{B}"]}}]"#),
            format!(r#"[{{"path":"{B}","narSize":1,"closureSize":1,"references":[]}}]"#),
            "not json".to_string(),
        ] {
            assert!(parse(&[A.to_string()], json.as_bytes()).is_err(), "{json}");
        }
    }
}
