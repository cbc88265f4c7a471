use std::path::PathBuf;

use super::{cache::DEFAULT_MANIFEST_CACHE_ENTRIES, source::DEFAULT_SOURCE_TTL_SECS, *};

/// Raw values by variable name, as the environment would give them.
fn settings(pairs: &[(&str, &str)]) -> ServeSettings {
    let mut values = ServeSettings::default();
    for (var, value) in pairs {
        let setting = super::settings()
            .find(|setting| setting.env == *var)
            .unwrap_or_else(|| panic!("no setting reads {var}"));
        values.insert(setting, (*value).into());
    }
    values
}

/// The configuration the values give.
fn accepted(pairs: &[(&str, &str)]) -> Config {
    settings(pairs).into_config().unwrap()
}

/// The error the values give.
fn rejected(pairs: &[(&str, &str)]) -> ConfigError {
    settings(pairs).into_config().unwrap_err()
}

/// The values are rejected with a message that starts with `start`.
fn assert_rejected(pairs: &[(&str, &str)], start: &str) {
    let err = rejected(pairs);
    assert!(err.to_string().starts_with(start), "{err}");
}

#[test]
fn defaults_give_filesystem_builtin_on_port_8080() {
    let c = accepted(&[]);
    assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.package_source, PackageSource::Builtin);
    assert_eq!(
        c.storage,
        StorageSetting::Filesystem {
            path: PathBuf::from("/var/lib/nixery")
        }
    );
    assert_eq!(c.nix_timeout, Duration::from_secs(60));
    assert_eq!(c.nix_deadline, Duration::from_secs(1800));
    assert!(!c.allow_unfree);
    assert!(c.pack_concurrency >= 1 && c.build_concurrency >= 1);
}

#[test]
fn each_package_source_is_recognised() {
    let c = settings(&[("NIXERY_CHANNEL", "nixos-unstable")]);
    assert_eq!(
        c.into_config().unwrap().package_source,
        PackageSource::Channel("nixos-unstable".into())
    );
    let c = settings(&[("NIXERY_PKGS_REPO", "https://example.org/pkgs.git")]);
    assert_eq!(
        c.into_config().unwrap().package_source,
        PackageSource::Git("https://example.org/pkgs.git".into())
    );
    let c = settings(&[("NIXERY_PKGS_PATH", "/srv/pkgs")]);
    assert_eq!(
        c.into_config().unwrap().package_source,
        PackageSource::Path("/srv/pkgs".into())
    );
}

#[test]
fn two_package_sources_are_rejected_naming_both() {
    let err = rejected(&[
        ("NIXERY_CHANNEL", "nixos-unstable"),
        ("NIXERY_PKGS_PATH", "/srv/pkgs"),
    ]);
    assert_eq!(
        err,
        ConfigError::ConflictingSources(vec!["NIXERY_CHANNEL", "NIXERY_PKGS_PATH"])
    );
    let msg = err.to_string();
    assert!(msg.contains("NIXERY_CHANNEL and NIXERY_PKGS_PATH"), "{msg}");
}

#[test]
fn empty_values_count_as_unset() {
    let c = accepted(&[
        ("NIXERY_CHANNEL", ""),
        ("NIXERY_PKGS_REPO", "  "),
        ("PORT", ""),
    ]);
    assert_eq!(c.package_source, PackageSource::Builtin);
    assert_eq!(c.listen.port(), 8080);
}

#[test]
fn gcs_without_bucket_names_gcs_bucket() {
    assert_rejected(
        &[("NIXERY_STORAGE_BACKEND", "gcs")],
        "GCS_BUCKET must be set",
    );
}

#[test]
fn gcs_with_bucket_keeps_credentials_and_emulator() {
    let c = accepted(&[
        ("NIXERY_STORAGE_BACKEND", "gcs"),
        ("GCS_BUCKET", "b"),
        ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json"),
        ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443"),
    ]);
    assert_eq!(
        c.storage,
        StorageSetting::Gcs {
            bucket: "b".into(),
            credentials: Some("/k.json".into()),
            emulator_host: Some("127.0.0.1:4443".into())
        }
    );
}

#[test]
fn s3_backend_takes_its_settings_from_its_own_group() {
    assert_rejected(&[("NIXERY_STORAGE_BACKEND", "s3")], "S3_BUCKET must be set");
    let c = accepted(&[
        ("NIXERY_STORAGE_BACKEND", "s3"),
        ("S3_BUCKET", "layers"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
        ("S3_USE_PRESIGNED_URLS", "false"),
    ]);
    let StorageSetting::S3(s3) = &c.storage else {
        panic!("{:?}", c.storage);
    };
    assert_eq!(s3.bucket, "layers");
    assert_eq!(s3.addressing, crate::storage::s3::Addressing::Path);
    assert!(!s3.presigned_urls);
    assert_rejected(
        &[
            ("NIXERY_STORAGE_BACKEND", "s3"),
            ("S3_BUCKET", "layers"),
            ("NIXERY_S3_PRESIGN_EXPIRY", "0"),
        ],
        "NIXERY_S3_PRESIGN_EXPIRY=",
    );
}

#[test]
fn unknown_backend_is_rejected() {
    let err = rejected(&[("NIXERY_STORAGE_BACKEND", "azure")]);
    assert!(err.to_string().contains("NIXERY_STORAGE_BACKEND"), "{err}");
}

#[test]
fn unparsable_or_zero_nix_timeout_is_rejected() {
    for bad in ["abc", "0", "-5", "1.5"] {
        let err = rejected(&[("NIX_TIMEOUT", bad)]);
        assert!(err.to_string().starts_with("NIX_TIMEOUT="), "{err}");
    }
    let c = settings(&[("NIX_TIMEOUT", "300")]);
    assert_eq!(
        c.into_config().unwrap().nix_timeout,
        Duration::from_secs(300)
    );
}

#[test]
fn connection_timeouts_default_and_parse() {
    let c = accepted(&[]);
    assert_eq!(c.limits.header_timeout, Duration::from_secs(30));
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));
    let c = accepted(&[
        ("NIXERY_HEADER_TIMEOUT", "5"),
        ("NIXERY_IDLE_TIMEOUT", " 7 "),
    ]);
    assert_eq!(c.limits.header_timeout, Duration::from_secs(5));
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(7));
    for (var, value) in [
        ("NIXERY_HEADER_TIMEOUT", "0"),
        ("NIXERY_IDLE_TIMEOUT", "soon"),
    ] {
        let err = rejected(&[(var, value)]);
        assert!(err.to_string().starts_with(&format!("{var}=")), "{err}");
    }
}

#[test]
fn nix_deadline_is_its_own_setting() {
    let err = rejected(&[("NIXERY_NIX_DEADLINE", "0")]);
    assert!(err.to_string().starts_with("NIXERY_NIX_DEADLINE="), "{err}");
    let c = accepted(&[("NIX_TIMEOUT", "30"), ("NIXERY_NIX_DEADLINE", "900")]);
    assert_eq!(c.nix_timeout, Duration::from_secs(30));
    assert_eq!(c.nix_deadline, Duration::from_secs(900));
}

#[test]
fn allow_unfree_takes_booleans_only() {
    for (value, expected) in [("true", true), ("1", true), ("False", false), ("no", false)] {
        let c = settings(&[("NIXERY_ALLOW_UNFREE", value)]);
        assert_eq!(c.into_config().unwrap().allow_unfree, expected, "{value}");
    }
    let err = rejected(&[("NIXERY_ALLOW_UNFREE", "maybe")]);
    assert!(err.to_string().starts_with("NIXERY_ALLOW_UNFREE="), "{err}");
}

#[test]
fn zero_concurrency_is_rejected() {
    assert_rejected(
        &[("NIXERY_PACK_CONCURRENCY", "0")],
        "NIXERY_PACK_CONCURRENCY=",
    );
    assert_rejected(
        &[("NIXERY_BUILD_CONCURRENCY", "many")],
        "NIXERY_BUILD_CONCURRENCY=",
    );
}

#[test]
fn source_ttl_and_cache_settings_are_parsed() {
    let c = accepted(&[]);
    assert_eq!(c.source_ttl, Duration::from_secs(DEFAULT_SOURCE_TTL_SECS));
    assert_eq!(c.channel_remote, crate::resolve::DEFAULT_CHANNEL_REMOTE);
    assert_eq!(c.manifest_cache_entries, DEFAULT_MANIFEST_CACHE_ENTRIES);
    let c = accepted(&[
        ("NIXERY_SOURCE_TTL", "0"),
        ("NIXERY_CHANNEL_REMOTE", "file:///srv/nixpkgs"),
        ("NIXERY_CACHE_DIR", "/srv/cache"),
        ("NIXERY_MANIFEST_CACHE_ENTRIES", "10"),
    ]);
    assert_eq!(c.source_ttl, Duration::ZERO);
    assert_eq!(c.channel_remote, "file:///srv/nixpkgs");
    assert_eq!(c.cache_dir, Some(PathBuf::from("/srv/cache")));
    assert_eq!(c.manifest_cache_entries, 10);
    for (settings, var) in [
        (
            settings(&[("NIXERY_SOURCE_TTL", "-1")]),
            "NIXERY_SOURCE_TTL=",
        ),
        (
            settings(&[("NIXERY_MANIFEST_CACHE_ENTRIES", "0")]),
            "NIXERY_MANIFEST_CACHE_ENTRIES=",
        ),
    ] {
        let err = settings.into_config().unwrap_err();
        assert!(err.to_string().starts_with(var), "{err}");
    }
}

#[test]
fn storage_identities_differ_per_root_and_bucket() {
    let fs = |p: &str| StorageSetting::Filesystem { path: p.into() }.identity();
    let gcs = |b: &str| {
        StorageSetting::Gcs {
            bucket: b.into(),
            credentials: None,
            emulator_host: None,
        }
        .identity()
    };
    assert_ne!(fs("/srv/a"), fs("/srv/b"));
    assert_ne!(gcs("a"), gcs("b"));
    assert_ne!(fs("a"), gcs("a"));
}

#[test]
fn bad_port_and_host_are_rejected() {
    let err = rejected(&[("PORT", "70000")]);
    assert!(err.to_string().starts_with("PORT="), "{err}");
    let err = rejected(&[("NIXERY_HOST", "localhost:1")]);
    assert!(err.to_string().starts_with("NIXERY_HOST="), "{err}");
}

#[test]
fn platforms_default_to_the_host_and_parse_in_order() {
    use crate::{image::Arch, platform::Platform};
    assert_eq!(accepted(&[]).platforms, [Platform::host()]);
    let c = accepted(&[("NIXERY_PLATFORMS", "linux/arm64, linux/amd64")]);
    assert_eq!(
        c.platforms,
        [Platform::linux(Arch::Arm64), Platform::linux(Arch::Amd64)]
    );
    for bad in ["linux/s390x", "linux/amd64,linux/amd64", "amd64"] {
        let err = rejected(&[("NIXERY_PLATFORMS", bad)]);
        assert!(err.to_string().starts_with("NIXERY_PLATFORMS="), "{err}");
    }
}

#[test]
fn port_zero_and_ipv6_host_are_accepted() {
    let c = accepted(&[("PORT", "0"), ("NIXERY_HOST", "::1")]);
    assert_eq!(c.listen, "[::1]:0".parse().unwrap());
}

#[test]
fn every_setting_has_its_own_variable_and_flag() {
    let all: Vec<&SettingInfo> = super::settings().collect();
    let vars: std::collections::BTreeSet<_> = all.iter().map(|s| s.env).collect();
    let flags: std::collections::BTreeSet<_> = all.iter().map(|s| s.flag).collect();
    assert_eq!(vars.len(), all.len(), "a variable is declared twice");
    assert_eq!(flags.len(), all.len(), "a flag is declared twice");
    assert!(
        all.iter()
            .all(|s| !s.doc.is_empty() && !s.doc.starts_with(' '))
    );
    assert_eq!(env_vars().len(), all.len() + 1);
    assert!(env_vars().contains(&"RUST_LOG"));
}

#[test]
fn clap_reads_flags_and_the_environment_into_the_table() {
    use clap::{Args, FromArgMatches};
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    let matches = command
        .try_get_matches_from(["serve", "--nix-timeout", "7", "--pkgs-path", "/srv/pkgs"])
        .unwrap();
    let args = ServeArgs::from_arg_matches(&matches).unwrap();
    let config = args.into_config().unwrap();
    assert_eq!(config.nix_timeout, Duration::from_secs(7));
    assert_eq!(
        config.package_source,
        PackageSource::Path("/srv/pkgs".into())
    );
}

#[test]
fn gc_settings_parse_durations_and_refuse_a_keep_shorter_than_the_notice() {
    let c = accepted(&[]);
    assert_eq!(c.gc.keep, None);
    assert_eq!(c.gc.interval, gc::DEFAULT_INTERVAL);
    assert_eq!(c.gc.grace, Duration::from_secs(3600));
    assert_eq!(c.gc.touch_interval, Duration::from_secs(3600));
    let c = accepted(&[
        ("NIXERY_GC_KEEP", "30d"),
        ("NIXERY_GC_INTERVAL", "12h"),
        ("NIXERY_GC_GRACE", "10m"),
        ("NIXERY_GC_TOUCH_INTERVAL", "45s"),
    ]);
    assert_eq!(c.gc.keep, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(c.gc.interval, Duration::from_secs(12 * 3600));
    assert_eq!(c.gc.grace, Duration::from_secs(600));
    assert_eq!(c.gc.touch_interval, Duration::from_secs(45));
    for (pairs, var) in [
        (&[("NIXERY_GC_KEEP", "10s")][..], "NIXERY_GC_KEEP="),
        (&[("NIXERY_GC_GRACE", "soon")][..], "NIXERY_GC_GRACE="),
        (&[("NIXERY_GC_INTERVAL", "0s")][..], "NIXERY_GC_INTERVAL="),
    ] {
        let err = rejected(pairs).to_string();
        assert!(err.starts_with(var), "{err}");
    }
    // Six touch intervals of one second are enough.
    let c = accepted(&[("NIXERY_GC_KEEP", "6s"), ("NIXERY_GC_TOUCH_INTERVAL", "1s")]);
    assert_eq!(c.gc.keep, Some(Duration::from_secs(6)));
}
