#![recursion_limit = "256"]
//! The NixOS module (`nix/module.nix`) declares a typed option for every
//! server setting and maps each to the variable the server reads, running
//! a hardened service. Evaluated with `nix-instantiate` against the stub
//! `lib` of `nix/tests/stub-lib.nix`, since nixpkgs is not available here:
//! a typo, a wrong type or a missing mapping fails these tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// Every setting of the server (CONTEXT.md's list) and the option for it.
const SETTINGS: &[(&str, &str)] = &[
    ("PORT", "port"),
    ("NIXERY_HOST", "host"),
    ("NIXERY_CHANNEL", "packageSource.value"),
    ("NIXERY_PKGS_REPO", "packageSource.value"),
    ("NIXERY_PKGS_PATH", "packageSource.value"),
    ("NIXERY_STORAGE_BACKEND", "storageBackend"),
    ("STORAGE_PATH", "storagePath"),
    ("GCS_BUCKET", "gcsBucket"),
    ("GOOGLE_APPLICATION_CREDENTIALS", "gcsCredentialsFile"),
    ("STORAGE_EMULATOR_HOST", "storageEmulatorHost"),
    ("S3_BUCKET", "s3Bucket"),
    ("AWS_REGION", "s3Region"),
    ("S3_ENDPOINT", "s3Endpoint"),
    ("AWS_ENDPOINT_URL_S3", "awsEndpointS3"),
    ("AWS_ENDPOINT_URL", "awsEndpoint"),
    ("S3_ACCESS_KEY", "s3AccessKey"),
    ("S3_LINK_EXPIRATION", "s3LinkExpiration"),
    ("NIXERY_S3_ADDRESSING", "s3Addressing"),
    ("S3_USE_PRESIGNED_URLS", "s3PresignedUrls"),
    ("NIXERY_S3_PRESIGN_EXPIRY", "s3PresignExpiry"),
    ("NIX_TIMEOUT", "nixTimeout"),
    ("NIXERY_NIX_DEADLINE", "nixDeadline"),
    ("NIXERY_ALLOW_UNFREE", "allowUnfree"),
    ("NIX_POPULARITY_URL", "popularityUrl"),
    ("NIXERY_LAYERING", "layering"),
    ("NIXERY_PREPARE_IMAGE", "prepareImage"),
    ("NIXERY_PACK_CONCURRENCY", "packConcurrency"),
    ("NIXERY_BUILD_CONCURRENCY", "buildConcurrency"),
    ("NIXERY_SOURCE_TTL", "sourceTtl"),
    ("NIXERY_CHANNEL_REMOTE", "channelRemote"),
    ("NIXERY_CACHE_DIR", "cacheDir"),
    ("NIXERY_MANIFEST_CACHE_ENTRIES", "manifestCacheEntries"),
    ("NIXERY_HEADER_TIMEOUT", "headerTimeout"),
    ("NIXERY_IDLE_TIMEOUT", "idleTimeout"),
    ("NIXERY_BUILD_QUEUE", "buildQueue"),
    ("NIXERY_GC_KEEP", "gcKeep"),
    ("NIXERY_GC_INTERVAL", "gcInterval"),
    ("NIXERY_GC_GRACE", "gcGrace"),
    ("NIXERY_GC_TOUCH_INTERVAL", "gcTouchInterval"),
    ("NIXERY_PLATFORMS", "platforms"),
    ("RUST_LOG", "logFilter"),
    ("NIXERY_AUTH_HTPASSWD", "auth.htpasswdFile"),
    ("NIXERY_AUTH_TOKEN_KEY", "auth.tokenKeyFile"),
    ("NIXERY_AUTH_ANONYMOUS", "auth.anonymous"),
    ("NIXERY_AUTH_SERVICE", "auth.service"),
    ("NIXERY_AUTH_REALM", "auth.realm"),
    ("NIXERY_AUTH_TOKEN_TTL", "auth.tokenTtl"),
];

/// Settings whose value is a secret: the option names a file that systemd
/// reads into the service's environment (`EnvironmentFile`), so the value
/// is neither in the Nix store nor in the unit's `Environment=`.
const FROM_ENVIRONMENT_FILE: &[(&str, &str)] = &[("S3_SECRET_KEY", "s3SecretKeyFile")];

/// Evaluates the module with `settings`; Err carries nix's message.
fn eval(settings: Value) -> Result<Value, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(root.join("nix/tests/eval-module.nix"))
        .args(["--argstr", "settings", &settings.to_string()])
        .output()
        .expect("nix-instantiate must be installed (Debian: nix-bin)");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("eval-module.nix prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn eval_ok(settings: Value) -> Value {
    eval(settings).unwrap_or_else(|error| panic!("module evaluation failed: {error}"))
}

fn environment(evaluated: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(
        evaluated["config"]["systemd"]["services"]["nixery"]["environment"].clone(),
    )
    .expect("environment is a map of strings")
}

fn service_config(evaluated: &Value) -> &Value {
    &evaluated["config"]["systemd"]["services"]["nixery"]["serviceConfig"]
}

/// A configuration setting every option away from its default.
fn full_settings() -> Value {
    json!({
        "enable": true,
        "port": 5000,
        "host": "127.0.0.1",
        "packageSource.kind": "channel",
        "packageSource.value": "nixos-24.05",
        "storageBackend": "gcs",
        "storagePath": "/srv/nixery",
        "gcsBucket": "layers",
        "gcsCredentialsFile": "/run/secrets/gcs.json",
        "storageEmulatorHost": "http://127.0.0.1:4443",
        "s3Bucket": "s3-layers",
        "s3Region": "eu-west-1",
        "s3Endpoint": "https://minio.example.org:9000",
        "awsEndpointS3": "https://s3.example.org",
        "awsEndpoint": "https://aws.example.org",
        "s3AccessKey": "AKIAEXAMPLE",
        "s3SecretKeyFile": "/run/secrets/nixery-s3-secret.env",
        "s3LinkExpiration": "10m",
        "s3Addressing": "virtual",
        "s3PresignedUrls": false,
        "s3PresignExpiry": 60,
        "s3CredentialsFile": "/run/secrets/aws-credentials",
        "s3Profile": "nixery",
        "nixTimeout": 120,
        "nixDeadline": 600,
        "allowUnfree": true,
        "popularityUrl": "https://example.org/popularity.json",
        "layering": "popularity",
        "prepareImage": "/opt/nixery-prepare-image",
        "packConcurrency": 4,
        "buildConcurrency": 2,
        "sourceTtl": 0,
        "channelRemote": "file:///srv/nixpkgs",
        "cacheDir": "/srv/nixery-cache",
        "manifestCacheEntries": 100,
        "headerTimeout": 10,
        "idleTimeout": 20,
        "buildQueue": 3,
        "gcKeep": "30d",
        "gcInterval": "12h",
        "gcGrace": "2h",
        "gcTouchInterval": "30m",
        "nixStoreGc.enable": true,
        "nixStoreGc.minFree": 1000,
        "nixStoreGc.maxFree": 5000,
        "nixStoreGc.dates": "weekly",
        "nixStoreGc.olderThan": "30d",
        "platforms": ["linux/arm64", "linux/amd64"],
        "logFilter": "info,nixery=debug",
        "auth.htpasswdFile": "/run/secrets/htpasswd",
        "auth.tokenKeyFile": "/run/secrets/token-key.pem",
        "auth.anonymous": "cached",
        "auth.service": "registry.example.org",
        "auth.realm": "https://registry.example.org/token",
        "auth.tokenTtl": 120,
        "openFirewall": true
    })
}

#[test]
fn every_setting_has_a_typed_option() {
    let options = &eval_ok(json!({}))["options"];
    let expected_types = [
        ("enable", "boolean"),
        ("package", "package"),
        ("port", "16 bit unsigned integer"),
        ("host", "string"),
        (
            "packageSource.kind",
            r#"one of "builtin", "channel", "pkgsRepo", "pkgsPath""#,
        ),
        ("packageSource.value", "null or string"),
        ("storageBackend", r#"one of "filesystem", "gcs", "s3""#),
        ("storagePath", "string"),
        ("gcsBucket", "null or string"),
        ("gcsCredentialsFile", "null or string"),
        ("storageEmulatorHost", "null or string"),
        ("s3Bucket", "null or string"),
        ("s3Region", "null or string"),
        ("s3Endpoint", "null or string"),
        ("awsEndpointS3", "null or string"),
        ("awsEndpoint", "null or string"),
        ("s3AccessKey", "null or string"),
        ("s3SecretKeyFile", "null or string"),
        ("s3LinkExpiration", "null or string"),
        (
            "s3Addressing",
            r#"null or one of "auto", "path", "virtual""#,
        ),
        ("s3PresignedUrls", "boolean"),
        ("s3PresignExpiry", "null or positive integer"),
        ("s3CredentialsFile", "null or string"),
        ("s3Profile", "null or string"),
        ("nixTimeout", "positive integer"),
        ("nixDeadline", "positive integer"),
        ("allowUnfree", "boolean"),
        ("popularityUrl", "null or string"),
        (
            "layering",
            r#"null or one of "size-rank", "popularity", "in-degree", "size-cohort""#,
        ),
        ("prepareImage", "null or string"),
        ("packConcurrency", "null or positive integer"),
        ("buildConcurrency", "null or positive integer"),
        ("sourceTtl", "null or unsigned integer"),
        ("channelRemote", "null or string"),
        ("cacheDir", "null or string"),
        ("manifestCacheEntries", "null or positive integer"),
        ("headerTimeout", "positive integer"),
        ("idleTimeout", "positive integer"),
        ("buildQueue", "null or unsigned integer"),
        ("gcKeep", "null or string"),
        ("gcInterval", "null or string"),
        ("gcGrace", "null or string"),
        ("gcTouchInterval", "null or string"),
        ("nixStoreGc.enable", "boolean"),
        ("nixStoreGc.minFree", "positive integer"),
        ("nixStoreGc.maxFree", "positive integer"),
        ("nixStoreGc.dates", "string"),
        ("nixStoreGc.olderThan", "string"),
        (
            "platforms",
            r#"null or list of one of "linux/amd64", "linux/arm64""#,
        ),
        ("logFilter", "string"),
        ("auth.htpasswdFile", "null or string"),
        ("auth.tokenKeyFile", "null or string"),
        ("auth.anonymous", r#"one of "none", "cached", "all""#),
        ("auth.service", "null or string"),
        ("auth.realm", "null or string"),
        ("auth.tokenTtl", "null or positive integer"),
        ("openFirewall", "boolean"),
    ];
    let declared = support::keys(options);
    let expected: BTreeSet<&str> = expected_types.iter().map(|(name, _)| *name).collect();
    assert_eq!(declared, expected);
    for (name, ty) in expected_types {
        assert_eq!(options[name]["type"], ty, "type of {name}");
    }
    for (variable, option) in SETTINGS.iter().chain(FROM_ENVIRONMENT_FILE) {
        assert!(
            declared.contains(option),
            "{variable} has no option {option}"
        );
    }
    assert_eq!(options["port"]["default"], 8080);
    assert_eq!(options["nixTimeout"]["default"], 60);
    assert_eq!(options["storagePath"]["default"], "/var/lib/nixery");
    assert_eq!(options["logFilter"]["default"], "info");
}

/// `settings` as the service's environment, with what the module always
/// sets besides: the Nix daemon, and the cache directory as home.
fn service_env(settings: &[(&str, &str)]) -> BTreeMap<String, String> {
    let always = [
        ("NIX_REMOTE", "daemon"),
        ("HOME", "/var/cache/nixery"),
        ("XDG_CACHE_HOME", "/var/cache/nixery"),
    ];
    settings
        .iter()
        .chain(&always)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn default_configuration_maps_to_the_server_defaults() {
    let env = environment(&eval_ok(json!({ "enable": true })));
    let expected = service_env(&[
        ("PORT", "8080"),
        ("NIXERY_HOST", "0.0.0.0"),
        ("NIXERY_STORAGE_BACKEND", "filesystem"),
        ("STORAGE_PATH", "/var/lib/nixery"),
        ("NIX_TIMEOUT", "60"),
        ("NIXERY_HEADER_TIMEOUT", "30"),
        ("NIXERY_IDLE_TIMEOUT", "60"),
        ("NIXERY_NIX_DEADLINE", "1800"),
        ("NIXERY_ALLOW_UNFREE", "false"),
        ("RUST_LOG", "info"),
    ]);
    assert_eq!(env, expected);
}

#[test]
fn full_configuration_sets_every_setting_variable() {
    let evaluated = eval_ok(full_settings());
    assert_eq!(evaluated["failedAssertions"], json!([]));
    let env = environment(&evaluated);
    let expected = service_env(&[
        ("PORT", "5000"),
        ("NIXERY_HOST", "127.0.0.1"),
        ("NIXERY_CHANNEL", "nixos-24.05"),
        ("NIXERY_STORAGE_BACKEND", "gcs"),
        ("STORAGE_PATH", "/srv/nixery"),
        ("GCS_BUCKET", "layers"),
        // The key reaches the service through LoadCredential.
        ("GOOGLE_APPLICATION_CREDENTIALS", "%d/gcs-credentials"),
        ("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443"),
        ("S3_BUCKET", "s3-layers"),
        ("AWS_REGION", "eu-west-1"),
        ("S3_ENDPOINT", "https://minio.example.org:9000"),
        ("AWS_ENDPOINT_URL_S3", "https://s3.example.org"),
        ("AWS_ENDPOINT_URL", "https://aws.example.org"),
        ("S3_ACCESS_KEY", "AKIAEXAMPLE"),
        ("S3_LINK_EXPIRATION", "10m"),
        ("NIXERY_S3_ADDRESSING", "virtual"),
        ("S3_USE_PRESIGNED_URLS", "false"),
        ("NIXERY_S3_PRESIGN_EXPIRY", "60"),
        // The credentials file reaches the service through LoadCredential.
        ("AWS_SHARED_CREDENTIALS_FILE", "%d/s3-credentials"),
        ("AWS_PROFILE", "nixery"),
        ("NIX_TIMEOUT", "120"),
        ("NIXERY_NIX_DEADLINE", "600"),
        ("NIXERY_ALLOW_UNFREE", "true"),
        ("NIX_POPULARITY_URL", "https://example.org/popularity.json"),
        ("NIXERY_LAYERING", "popularity"),
        ("NIXERY_PREPARE_IMAGE", "/opt/nixery-prepare-image"),
        ("NIXERY_PACK_CONCURRENCY", "4"),
        ("NIXERY_BUILD_CONCURRENCY", "2"),
        ("NIXERY_SOURCE_TTL", "0"),
        ("NIXERY_CHANNEL_REMOTE", "file:///srv/nixpkgs"),
        ("NIXERY_CACHE_DIR", "/srv/nixery-cache"),
        ("NIXERY_MANIFEST_CACHE_ENTRIES", "100"),
        ("NIXERY_HEADER_TIMEOUT", "10"),
        ("NIXERY_IDLE_TIMEOUT", "20"),
        ("NIXERY_BUILD_QUEUE", "3"),
        ("NIXERY_GC_KEEP", "30d"),
        ("NIXERY_GC_INTERVAL", "12h"),
        ("NIXERY_GC_GRACE", "2h"),
        ("NIXERY_GC_TOUCH_INTERVAL", "30m"),
        ("NIXERY_PLATFORMS", "linux/arm64,linux/amd64"),
        ("RUST_LOG", "info,nixery=debug"),
        // The htpasswd file and the signing key reach the service through
        // LoadCredential, never the Nix store.
        ("NIXERY_AUTH_HTPASSWD", "%d/auth-htpasswd"),
        ("NIXERY_AUTH_TOKEN_KEY", "%d/auth-token-key"),
        ("NIXERY_AUTH_ANONYMOUS", "cached"),
        ("NIXERY_AUTH_SERVICE", "registry.example.org"),
        ("NIXERY_AUTH_REALM", "https://registry.example.org/token"),
        ("NIXERY_AUTH_TOKEN_TTL", "120"),
    ]);
    assert_eq!(env, expected);
    assert_eq!(
        service_config(&evaluated)["LoadCredential"],
        json!([
            "gcs-credentials:/run/secrets/gcs.json",
            "s3-credentials:/run/secrets/aws-credentials",
            "auth-htpasswd:/run/secrets/htpasswd",
            "auth-token-key:/run/secrets/token-key.pem"
        ])
    );
    // The secret key reaches the service through EnvironmentFile only.
    assert_eq!(
        service_config(&evaluated)["EnvironmentFile"],
        json!(["/run/secrets/nixery-s3-secret.env"])
    );
    assert_eq!(
        evaluated["config"]["networking"]["firewall"]["allowedTCPPorts"],
        json!([5000])
    );
}

#[test]
fn each_package_source_kind_sets_only_its_variable() {
    let sources = ["NIXERY_CHANNEL", "NIXERY_PKGS_REPO", "NIXERY_PKGS_PATH"];
    for (kind, variable) in [
        ("channel", "NIXERY_CHANNEL"),
        ("pkgsRepo", "NIXERY_PKGS_REPO"),
        ("pkgsPath", "NIXERY_PKGS_PATH"),
    ] {
        let env = environment(&eval_ok(json!({
            "enable": true,
            "packageSource.kind": kind,
            "packageSource.value": "SOURCE",
        })));
        for other in sources {
            let expected = (other == variable).then_some("SOURCE");
            assert_eq!(env.get(other).map(String::as_str), expected, "kind {kind}");
        }
    }
    let builtin = environment(&eval_ok(json!({ "enable": true })));
    assert!(sources.iter().all(|v| !builtin.contains_key(*v)));
}

#[test]
fn every_setting_reaches_the_environment_of_some_configuration() {
    let mut seen = BTreeSet::new();
    for kind in ["pkgsRepo", "pkgsPath"] {
        let mut settings = full_settings();
        settings["packageSource.kind"] = json!(kind);
        seen.extend(environment(&eval_ok(settings)).into_keys());
    }
    let full = eval_ok(full_settings());
    seen.extend(environment(&full).into_keys());
    for (variable, option) in FROM_ENVIRONMENT_FILE {
        let file = &full_settings()[*option];
        assert!(
            service_config(&full)["EnvironmentFile"]
                .as_array()
                .is_some_and(|files| files.contains(file)),
            "{option} never reaches the service"
        );
        seen.insert((*variable).to_owned());
    }
    for (variable, option) in SETTINGS {
        assert!(seen.contains(*variable), "{option} never sets {variable}");
    }
    // Every setting of the server's settings table must be reachable from
    // the module too.
    for setting in nixery::config::settings() {
        let variable = setting.env;
        assert!(
            seen.contains(variable),
            "the server reads {variable}; the module never sets it"
        );
    }
}

#[test]
fn the_nix_store_is_collected_by_nix_unless_turned_off() {
    let nix = |settings: Value| eval_ok(settings)["config"]["nix"].clone();
    let defaults = nix(json!({ "enable": true }));
    assert_eq!(defaults["settings"]["min-free"], 2_147_483_648u64);
    assert_eq!(defaults["settings"]["max-free"], 10_737_418_240u64);
    assert_eq!(defaults["gc"]["automatic"], true);
    assert_eq!(defaults["gc"]["dates"], "daily");
    assert_eq!(defaults["gc"]["options"], "--delete-older-than 14d");
    let tuned = nix(full_settings());
    assert_eq!(tuned["settings"]["min-free"], 1000);
    assert_eq!(tuned["gc"]["options"], "--delete-older-than 30d");
    let off = eval_ok(json!({ "enable": true, "nixStoreGc.enable": false }));
    assert!(
        off["config"].get("nix").is_none(),
        "{}",
        off["config"]["nix"]
    );
}

#[test]
fn service_is_hardened_and_builds_through_the_daemon() {
    let evaluated = eval_ok(json!({ "enable": true }));
    let service = &evaluated["config"]["systemd"]["services"]["nixery"];
    let config = service_config(&evaluated);
    for (key, value) in [
        ("User", json!("nixery")),
        ("StateDirectory", json!("nixery")),
        ("CacheDirectory", json!("nixery")),
        ("ProtectSystem", json!("strict")),
        ("ProtectHome", json!(true)),
        ("PrivateTmp", json!(true)),
        ("PrivateDevices", json!(true)),
        ("NoNewPrivileges", json!(true)),
        ("RestrictSUIDSGID", json!(true)),
        ("CapabilityBoundingSet", json!([""])),
        (
            "ExecStart",
            json!("/nix/store/00000000000000000000000000000000-nixery/bin/nixery serve"),
        ),
    ] {
        assert_eq!(config[key], value, "serviceConfig.{key}");
    }
    assert_eq!(environment(&evaluated)["NIX_REMOTE"], "daemon");
    let path = service["path"].as_array().expect("path list");
    assert!(path.contains(&json!("/nix/store/00000000000000000000000000000000-nix")));
    assert!(
        service["requires"]
            .as_array()
            .unwrap()
            .contains(&json!("nix-daemon.socket"))
    );
    assert_eq!(
        evaluated["config"]["users"]["users"]["nixery"]["isSystemUser"],
        true
    );
    // Not opened unless asked.
    assert!(
        evaluated["config"]["networking"]["firewall"]
            .get("allowedTCPPorts")
            .is_none()
    );
}

#[test]
fn storage_outside_var_lib_is_created_and_made_writable() {
    let evaluated = eval_ok(json!({ "enable": true, "storagePath": "/srv/nixery" }));
    let config = service_config(&evaluated);
    assert_eq!(config["ReadWritePaths"], json!(["/srv/nixery"]));
    assert!(config.get("StateDirectory").is_none());
    assert_eq!(
        evaluated["config"]["systemd"]["tmpfiles"]["rules"],
        json!(["d '/srv/nixery' 0750 nixery nixery - -"])
    );
}

#[test]
fn privileged_port_gets_only_the_bind_capability() {
    let evaluated = eval_ok(json!({ "enable": true, "port": 80 }));
    let config = service_config(&evaluated);
    assert_eq!(
        config["CapabilityBoundingSet"],
        json!(["CAP_NET_BIND_SERVICE"])
    );
    assert_eq!(
        config["AmbientCapabilities"],
        json!(["CAP_NET_BIND_SERVICE"])
    );
}

#[test]
fn inconsistent_settings_fail_assertions() {
    for (settings, message) in [
        (json!({ "storageBackend": "gcs" }), "gcsBucket is required"),
        (json!({ "storageBackend": "s3" }), "s3Bucket is required"),
        (
            json!({ "packageSource.kind": "channel" }),
            "packageSource.value must be set",
        ),
        (
            json!({ "packageSource.value": "nixos-24.05" }),
            "packageSource.value must be set",
        ),
        (
            json!({ "storagePath": "relative/dir" }),
            "must be an absolute path",
        ),
        (
            json!({ "platforms": [] }),
            "platforms must name at least one platform",
        ),
        (
            json!({ "s3AccessKey": "AKIAEXAMPLE" }),
            "s3AccessKey and s3SecretKeyFile are set together",
        ),
        (
            json!({ "s3SecretKeyFile": "/run/secrets/s3.env" }),
            "s3AccessKey and s3SecretKeyFile are set together",
        ),
        (
            json!({ "auth.tokenKeyFile": "/run/secrets/key.pem" }),
            "auth.htpasswdFile is required",
        ),
        (
            json!({ "auth.anonymous": "cached" }),
            "auth.htpasswdFile is required",
        ),
    ] {
        let mut settings = settings;
        settings["enable"] = json!(true);
        let failed = eval_ok(settings.clone())["failedAssertions"].to_string();
        assert!(failed.contains(message), "{settings}: {failed}");
    }
}

#[test]
fn mistyped_or_unknown_option_fails_evaluation() {
    for (settings, message) in [
        (json!({ "port": "8080" }), "services.nixery.port"),
        (json!({ "port": 70000 }), "services.nixery.port"),
        (json!({ "nixTimeout": 0 }), "services.nixery.nixTimeout"),
        (
            json!({ "storageBackend": "azure" }),
            "services.nixery.storageBackend",
        ),
        (
            json!({ "packConcurrency": -1 }),
            "services.nixery.packConcurrency",
        ),
        (
            json!({ "platforms": ["linux/s390x"] }),
            "services.nixery.platforms",
        ),
        (
            json!({ "platforms": "linux/arm64" }),
            "services.nixery.platforms",
        ),
        (
            json!({ "prot": 80 }),
            "unknown options: services.nixery.prot",
        ),
        (
            json!({ "auth.anonymous": "some" }),
            "services.nixery.auth.anonymous",
        ),
    ] {
        let error = eval(settings.clone()).expect_err(&settings.to_string());
        assert!(error.contains(message), "{settings}: {error}");
    }
}

#[test]
fn disabled_module_configures_nothing() {
    assert_eq!(eval_ok(json!({}))["config"], json!({}));
}
