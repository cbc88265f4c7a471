//! Tests of the grouping: hand-derived examples first, then properties on
//! random closures.

use super::*;
use crate::layers::{ExportReferences, PathInfo};

/// A store path whose hash is derived from `name`, so that sorting paths
/// sorts names and the expected layers below read naturally.
fn p(name: &str) -> String {
    let mut hash: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    while hash.len() < 32 {
        hash.push('0');
    }
    format!("/nix/store/{hash}-{name}")
}

/// A runtime graph: top-level names, then `(name, closure size, references)`.
/// Every path also references itself, as in real Nix output.
fn graph(top: &[&str], entries: &[(&str, u64, &[&str])]) -> RuntimeGraph {
    RuntimeGraph {
        export_references_graph: ExportReferences {
            graph: top.iter().map(|n| p(n)).collect(),
        },
        graph: entries
            .iter()
            .map(|(name, size, refs)| PathInfo {
                path: p(name),
                closure_size: *size,
                nar_size: None,
                references: std::iter::once(name)
                    .chain(refs.iter())
                    .map(|n| p(n))
                    .collect(),
                nar_hash: None,
            })
            .collect(),
    }
}

fn pop(counts: &[(&str, u64)]) -> Popularity {
    counts.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
}

fn layer(names: &[&str], merge_rating: u128) -> Layer {
    Layer {
        contents: names.iter().map(|n| p(n)).collect(),
        merge_rating,
    }
}

const MB: u64 = 1_000_000;

/// The worked example of the module documentation.
fn git_and_htop() -> (RuntimeGraph, Popularity) {
    let g = graph(
        &["git", "htop", "nss-cacert"],
        &[
            ("git", 120 * MB, &["curl", "perl", "glibc"]),
            ("curl", 40 * MB, &["openssl", "glibc"]),
            ("openssl", 35 * MB, &["glibc"]),
            ("perl", 150 * MB, &["glibc"]),
            ("htop", 36 * MB, &["ncurses", "glibc"]),
            ("ncurses", 33 * MB, &["glibc"]),
            ("glibc", 30 * MB, &[]),
            ("nss-cacert", MB / 2, &[]),
        ],
    );
    (g, pop(&[("glibc", 300), ("openssl", 60)]))
}

fn group(g: &RuntimeGraph, popularity: &Popularity, budget: usize) -> Vec<Layer> {
    group_layers(g, popularity, budget).unwrap()
}

#[test]
fn worked_example_without_merging_gives_one_layer_per_dominator_subtree() {
    let (g, popularity) = git_and_htop();
    let expected = vec![
        layer(&["htop", "ncurses"], 69_000_000),
        layer(&["perl"], 150_000_000),
        layer(&["curl", "git", "openssl"], 195_000_000),
        layer(&["glibc"], 9_000_000_000),
        layer(&["nss-cacert"], 250_000_000_000),
    ];
    for budget in [5, 6, crate::layers::DEFAULT_BUDGET, usize::MAX] {
        assert_eq!(group(&g, &popularity, budget), expected, "budget {budget}");
    }
}

#[test]
fn budget_four_merges_the_two_lowest_and_keeps_them_first() {
    let (g, popularity) = git_and_htop();
    assert_eq!(
        group(&g, &popularity, 4),
        vec![
            layer(&["htop", "ncurses", "perl"], 219_000_000),
            layer(&["curl", "git", "openssl"], 195_000_000),
            layer(&["glibc"], 9_000_000_000),
            layer(&["nss-cacert"], 250_000_000_000),
        ]
    );
}

#[test]
fn budget_three_snowballs_the_three_lowest() {
    let (g, popularity) = git_and_htop();
    assert_eq!(
        group(&g, &popularity, 3),
        vec![
            layer(
                &["htop", "ncurses", "perl", "curl", "git", "openssl"],
                414_000_000
            ),
            layer(&["glibc"], 9_000_000_000),
            layer(&["nss-cacert"], 250_000_000_000),
        ]
    );
}

#[test]
fn budget_two_leaves_only_the_most_valuable_layer_apart() {
    let (g, popularity) = git_and_htop();
    assert_eq!(
        group(&g, &popularity, 2),
        vec![
            layer(
                &["htop", "ncurses", "perl", "curl", "git", "openssl", "glibc"],
                9_414_000_000
            ),
            layer(&["nss-cacert"], 250_000_000_000),
        ]
    );
}

#[test]
fn budget_one_puts_everything_in_one_layer() {
    let (g, popularity) = git_and_htop();
    let layers = group(&g, &popularity, 1);
    assert_eq!(
        layers,
        vec![layer(
            &[
                "htop",
                "ncurses",
                "perl",
                "curl",
                "git",
                "openssl",
                "glibc",
                "nss-cacert"
            ],
            259_414_000_000
        )]
    );
}

#[test]
fn shared_dependency_gets_its_own_layer() {
    // a and b both need c: neither dominates it, so c stands alone.
    let g = graph(
        &["a", "b"],
        &[
            ("a", 10, &["c", "d"]),
            ("b", 20, &["c"]),
            ("c", 5, &[]),
            ("d", 1, &[]),
        ],
    );
    assert_eq!(
        group(&g, &Popularity::default(), usize::MAX),
        vec![layer(&["c"], 5), layer(&["a", "d"], 11), layer(&["b"], 20)]
    );
}

#[test]
fn popular_dependency_is_lifted_into_its_own_layer() {
    // Only a uses p, but p is popular: it heads its own layer, taking q
    // (which only p uses) with it.
    let g = graph(
        &["a"],
        &[("a", 10, &["p"]), ("p", 3, &["q"]), ("q", 4, &[])],
    );
    assert_eq!(
        group(&g, &pop(&[("p", 100), ("a", 2)]), usize::MAX),
        vec![layer(&["a"], 20), layer(&["p", "q"], 700)]
    );
    // Just below the threshold, p stays in a's layer; only a's popularity
    // counts for the rating.
    assert_eq!(
        group(&g, &pop(&[("p", 99), ("a", 2)]), usize::MAX),
        vec![layer(&["a", "p", "q"], 34)]
    );
}

#[test]
fn big_dependency_is_lifted_into_its_own_layer() {
    let g = graph(&["a"], &[("a", 10, &["big"]), ("big", 100_000_001, &[])]);
    assert_eq!(
        group(&g, &Popularity::default(), usize::MAX),
        vec![layer(&["a"], 10), layer(&["big"], 100_000_001)]
    );
    // Exactly the threshold is not big.
    let g = graph(&["a"], &[("a", 10, &["big"]), ("big", 100_000_000, &[])]);
    assert_eq!(
        group(&g, &Popularity::default(), usize::MAX),
        vec![layer(&["a", "big"], 100_000_010)]
    );
}

#[test]
fn special_packages_are_lifted_without_popularity_data() {
    let g = graph(
        &["a"],
        &[
            ("a", 1, &["iana-etc-2024", "zz"]),
            ("iana-etc-2024", 2, &[]),
            ("zz", 1, &[]),
        ],
    );
    assert_eq!(
        group(&g, &Popularity::default(), usize::MAX),
        vec![layer(&["a", "zz"], 2), layer(&["iana-etc-2024"], 1_000_000)]
    );
}

#[test]
fn dominated_chains_and_diamonds_stay_together() {
    // a -> b -> c -> d, and a diamond a -> {e, f} -> g: a dominates all.
    let g = graph(
        &["a"],
        &[
            ("a", 1, &["b", "e", "f"]),
            ("b", 1, &["c"]),
            ("c", 1, &["d"]),
            ("d", 1, &[]),
            ("e", 1, &["g"]),
            ("f", 1, &["g"]),
            ("g", 1, &[]),
        ],
    );
    assert_eq!(
        group(&g, &Popularity::default(), usize::MAX),
        vec![layer(&["a", "b", "c", "d", "e", "f", "g"], 7)]
    );
}

#[test]
fn equal_ratings_are_ordered_by_first_store_path() {
    let g = graph(
        &["m", "b", "x"],
        &[
            ("x", 7, &[]),
            ("m", 7, &["a"]),
            ("a", 0, &[]),
            ("b", 7, &[]),
        ],
    );
    assert_eq!(
        group(&g, &Popularity::default(), usize::MAX),
        vec![layer(&["a", "m"], 7), layer(&["b"], 7), layer(&["x"], 7)]
    );
}

#[test]
fn terabyte_closures_with_huge_popularity_do_not_overflow() {
    let g = graph(&["a", "b"], &[("a", u64::MAX, &[]), ("b", u64::MAX, &[])]);
    let layers = group(&g, &pop(&[("a", u64::MAX)]), 1);
    let a = u128::from(u64::MAX) * u128::from(u64::MAX);
    let b = u128::from(u64::MAX);
    assert_eq!(layers, vec![layer(&["b", "a"], a + b)]);
}

#[test]
fn layer_key_is_sha1_of_contents_joined_by_colons() {
    let l = Layer {
        contents: vec!["/nix/store/x-a".into(), "/nix/store/y-b".into()],
        merge_rating: 0,
    };
    assert_eq!(l.key(), "7c561b6e289874f41d4d61df0910d329290a7171");
    let single = Layer {
        contents: vec!["a:b".into()],
        merge_rating: 1,
    };
    assert_eq!(single.key(), "dcea6d9ccd3d20ba1549f6d9b5dde60742158882");
}

#[test]
fn empty_graph_gives_no_layers() {
    assert_eq!(group(&graph(&[], &[]), &Popularity::default(), 3), vec![]);
}

#[test]
fn unknown_reference_is_an_error_naming_both_paths() {
    let g = graph(&["a"], &[("a", 1, &["ghost"])]);
    assert_eq!(
        group_layers(&g, &Popularity::default(), 3),
        Err(LayerError::UnknownReference {
            path: p("a"),
            reference: p("ghost")
        })
    );
}

#[test]
fn top_level_path_missing_from_graph_is_an_error() {
    let g = graph(&["a", "ghost"], &[("a", 1, &[])]);
    assert_eq!(
        group_layers(&g, &Popularity::default(), 3),
        Err(LayerError::UnknownTopLevel { path: p("ghost") })
    );
}

#[test]
fn duplicate_entry_is_an_error() {
    let g = graph(&["a"], &[("a", 1, &[]), ("a", 2, &[])]);
    assert_eq!(
        group_layers(&g, &Popularity::default(), 3),
        Err(LayerError::DuplicatePath { path: p("a") })
    );
}

#[test]
fn path_outside_the_closure_is_an_error() {
    let g = graph(
        &["a"],
        &[("a", 1, &[]), ("orphan", 1, &[]), ("stray", 1, &["orphan"])],
    );
    assert_eq!(
        group_layers(&g, &Popularity::default(), 3),
        Err(LayerError::Unreachable { path: p("orphan") })
    );
}

#[test]
fn zero_budget_is_an_error() {
    let (g, popularity) = git_and_htop();
    assert_eq!(
        group_layers(&g, &popularity, 0),
        Err(LayerError::ZeroBudget)
    );
}

mod properties {
    use std::collections::{HashMap, VecDeque};

    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    /// How a generated path's popularity is given.
    #[derive(Debug, Clone)]
    enum Pop {
        Absent,
        Count(u64),
        Special,
    }

    impl Pop {
        fn effective(&self) -> u64 {
            match self {
                Pop::Absent => 1,
                Pop::Count(c) => *c,
                Pop::Special => 500_000,
            }
        }
    }

    /// A random closure: paths `0..n` where path `i` may only reference
    /// paths after it (a DAG), every path without a referrer is top-level,
    /// and some others are too.
    #[derive(Debug, Clone)]
    struct Closure {
        paths: Vec<String>,
        sizes: Vec<u64>,
        pops: Vec<Pop>,
        refs: Vec<Vec<usize>>,
        self_ref: Vec<bool>,
        top: Vec<usize>,
    }

    impl Closure {
        fn runtime_graph(&self) -> RuntimeGraph {
            RuntimeGraph {
                export_references_graph: ExportReferences {
                    graph: self.top.iter().map(|&i| self.paths[i].clone()).collect(),
                },
                graph: (0..self.paths.len())
                    .map(|i| PathInfo {
                        path: self.paths[i].clone(),
                        closure_size: self.sizes[i],
                        nar_size: None,
                        references: self.self_ref[i]
                            .then_some(i)
                            .into_iter()
                            .chain(self.refs[i].iter().copied())
                            .map(|j| self.paths[j].clone())
                            .collect(),
                        nar_hash: None,
                    })
                    .collect(),
            }
        }

        fn popularity(&self) -> Popularity {
            (0..self.paths.len())
                .filter_map(|i| match self.pops[i] {
                    Pop::Count(c) => {
                        Some((crate::layers::package_name(&self.paths[i]).to_owned(), c))
                    }
                    _ => None,
                })
                .collect()
        }

        fn lifted(&self, i: usize) -> bool {
            self.sizes[i] > 100_000_000 || self.pops[i].effective() >= 100
        }

        /// Paths reachable from the synthetic root when `removed` is taken
        /// out of the graph: an oracle for dominance independent of the
        /// implementation under test.
        fn reachable_without(&self, removed: Option<usize>) -> Vec<bool> {
            let n = self.paths.len();
            let mut seen = vec![false; n];
            let mut queue: VecDeque<usize> = self
                .top
                .iter()
                .copied()
                .chain((0..n).filter(|&i| self.lifted(i)))
                .collect();
            while let Some(i) = queue.pop_front() {
                if Some(i) == removed || seen[i] {
                    continue;
                }
                seen[i] = true;
                queue.extend(self.refs[i].iter().copied());
            }
            seen
        }

        /// `dominators[v]`: the paths other than `v` (and the root) that lie
        /// on every route from the root to `v`.
        fn dominators(&self) -> Vec<Vec<usize>> {
            let n = self.paths.len();
            let mut doms = vec![Vec::new(); n];
            for d in 0..n {
                let reach = self.reachable_without(Some(d));
                for (v, reached) in reach.into_iter().enumerate() {
                    if v != d && !reached {
                        doms[v].push(d);
                    }
                }
            }
            doms
        }
    }

    fn arb_pop() -> impl Strategy<Value = Pop> {
        prop_oneof![
            4 => Just(Pop::Absent),
            3 => (0u64..100).prop_map(Pop::Count),
            2 => (100u64..1000).prop_map(Pop::Count),
            1 => Just(Pop::Special),
        ]
    }

    fn arb_size() -> impl Strategy<Value = u64> {
        prop_oneof![
            6 => 0u64..2000,
            1 => 99_999_990u64..100_000_010,
        ]
    }

    fn arb_closure() -> impl Strategy<Value = Closure> {
        (1usize..24)
            .prop_flat_map(|n| {
                (
                    prop::collection::vec(arb_size(), n),
                    prop::collection::vec(arb_pop(), n),
                    prop::collection::vec(prop::collection::vec(any::<Index>(), 0..4), n),
                    prop::collection::vec(any::<bool>(), n),
                    prop::collection::vec(prop::bool::weighted(0.15), n),
                    any::<u64>(),
                )
            })
            .prop_map(|(sizes, pops, ref_picks, self_ref, extra_top, salt)| {
                let n = sizes.len();
                let refs: Vec<Vec<usize>> = ref_picks
                    .iter()
                    .enumerate()
                    .map(|(i, picks)| {
                        if i + 1 == n {
                            return Vec::new();
                        }
                        picks.iter().map(|ix| i + 1 + ix.index(n - i - 1)).collect()
                    })
                    .collect();
                let mut referred = vec![false; n];
                for &j in refs.iter().flatten() {
                    referred[j] = true;
                }
                let top = (0..n).filter(|&i| !referred[i] || extra_top[i]).collect();
                // Hashes unrelated to the index, so path order differs from
                // generation order.
                let paths = (0..n)
                    .map(|i| {
                        let hash = (i as u64 + 1)
                            .wrapping_mul(salt | 1)
                            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        let name = match pops[i] {
                            Pop::Special if i % 2 == 0 => format!("nss-cacert-{i}"),
                            Pop::Special => format!("iana-etc-{i}"),
                            _ => format!("pkg-{i}"),
                        };
                        format!("/nix/store/{hash:032x}-{name}")
                    })
                    .collect();
                Closure {
                    paths,
                    sizes,
                    pops,
                    refs,
                    self_ref,
                    top,
                }
            })
    }

    fn arb_budget() -> impl Strategy<Value = usize> {
        prop_oneof![1usize..12, Just(usize::MAX)]
    }

    /// A seeded Fisher-Yates shuffle (splitmix64), for reordering input.
    fn shuffle<T>(items: &mut [T], seed: &mut u64) {
        for i in (1..items.len()).rev() {
            *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            items.swap(i, (z % (i as u64 + 1)) as usize);
        }
    }

    fn layer_of(layers: &[Layer]) -> HashMap<&str, usize> {
        layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.contents.iter().map(move |p| (p.as_str(), i)))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_path_is_in_exactly_one_layer(c in arb_closure(), budget in arb_budget()) {
            let layers = group_layers(&c.runtime_graph(), &c.popularity(), budget).unwrap();
            let mut all: Vec<&String> = layers.iter().flat_map(|l| &l.contents).collect();
            all.sort();
            let mut expected: Vec<&String> = c.paths.iter().collect();
            expected.sort();
            prop_assert_eq!(all, expected);
        }

        #[test]
        fn layer_count_never_exceeds_the_budget(c in arb_closure(), budget in arb_budget()) {
            let layers = group_layers(&c.runtime_graph(), &c.popularity(), budget).unwrap();
            prop_assert!(layers.len() <= budget);
            prop_assert!(!layers.is_empty());
        }

        #[test]
        fn output_is_identical_across_runs_and_input_orders(
            c in arb_closure(),
            budget in arb_budget(),
            mut seed in any::<u64>(),
        ) {
            let g = c.runtime_graph();
            let popularity = c.popularity();
            let first = group_layers(&g, &popularity, budget).unwrap();
            prop_assert_eq!(&group_layers(&g, &popularity, budget).unwrap(), &first);

            let mut shuffled = g.clone();
            shuffle(&mut shuffled.graph, &mut seed);
            shuffle(&mut shuffled.export_references_graph.graph, &mut seed);
            for entry in &mut shuffled.graph {
                shuffle(&mut entry.references, &mut seed);
            }
            // A fresh map: a different hash-map iteration order.
            let popularity: Popularity = c.popularity();
            prop_assert_eq!(&group_layers(&shuffled, &popularity, budget).unwrap(), &first);
        }

        #[test]
        fn dominated_paths_share_their_dominators_layer(c in arb_closure(), budget in arb_budget()) {
            let layers = group_layers(&c.runtime_graph(), &c.popularity(), budget).unwrap();
            let layer = layer_of(&layers);
            for (v, doms) in c.dominators().iter().enumerate() {
                // A lifted path hangs off the root, so nothing dominates it.
                prop_assert!(!c.lifted(v) || doms.is_empty());
                for &d in doms {
                    prop_assert_eq!(layer[c.paths[v].as_str()], layer[c.paths[d].as_str()]);
                }
            }
        }

        #[test]
        fn unmerged_layers_are_exactly_the_root_dominated_paths_with_their_subtrees(
            c in arb_closure(),
        ) {
            let layers = group_layers(&c.runtime_graph(), &c.popularity(), usize::MAX).unwrap();
            let doms = c.dominators();
            let heads: Vec<usize> = (0..c.paths.len()).filter(|&v| doms[v].is_empty()).collect();
            prop_assert_eq!(layers.len(), heads.len());
            let layer = layer_of(&layers);
            let mut heads_per_layer = vec![0; layers.len()];
            for &h in &heads {
                heads_per_layer[layer[c.paths[h].as_str()]] += 1;
            }
            prop_assert!(heads_per_layer.iter().all(|&k| k == 1));
            for (l, w) in layers.iter().zip(layers.iter().skip(1)) {
                prop_assert!((l.merge_rating, &l.contents[0]) < (w.merge_rating, &w.contents[0]));
            }
            for &h in &heads {
                let l = &layers[layer[c.paths[h].as_str()]];
                prop_assert!(l.contents.windows(2).all(|p| p[0] < p[1]));
                let size: u128 = l
                    .contents
                    .iter()
                    .map(|path| u128::from(c.sizes[c.paths.iter().position(|q| q == path).unwrap()]))
                    .sum();
                prop_assert_eq!(l.merge_rating, u128::from(c.pops[h].effective()) * size);
            }
        }
    }
}
