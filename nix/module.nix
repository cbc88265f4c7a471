# NixOS module for nixery-rs: `services.nixery`.
#
# Every setting of the server is an option here, mapped to the environment
# variable the server reads (see docs/deployment.md for the table). The
# service runs as a dedicated system user under systemd's sandboxing and
# builds through the host's nix-daemon (NIX_REMOTE=daemon), so it needs no
# privileges of its own.
#
# `nix/tests/eval-module.nix` evaluates this file against a small stub of
# nixpkgs' `lib` in CI: use only the `lib` functions that stub provides (or
# add them there, with the same meaning as in nixpkgs).
{ config, lib, pkgs, ... }:

let
  inherit (lib) literalExpression mkDefault mkEnableOption mkIf mkOption optional optionalAttrs types;

  cfg = config.services.nixery;

  # The directory systemd creates and hands to the service user. Storage
  # under /var/lib gets a StateDirectory; anywhere else it is created by
  # tmpfiles and opened up with ReadWritePaths.
  underVarLib = lib.hasPrefix "/var/lib/" cfg.storagePath;
  stateDirectory = lib.removePrefix "/var/lib/" cfg.storagePath;

  # Nix keeps its own caches (fetched channels and git repositories) under
  # $XDG_CACHE_HOME; they must not land in the image storage.
  cacheDirectory = "/var/cache/nixery";

  # Name of the GCS key as handed over by systemd's LoadCredential.
  gcsCredentialName = "gcs-credentials";
  # Name of the AWS shared credentials file, handed over the same way.
  s3CredentialName = "s3-credentials";

  sourceVariable = {
    builtin = { };
    channel = { NIXERY_CHANNEL = cfg.packageSource.value; };
    pkgsRepo = { NIXERY_PKGS_REPO = cfg.packageSource.value; };
    pkgsPath = { NIXERY_PKGS_PATH = cfg.packageSource.value; };
  }.${cfg.packageSource.kind};

  # The settings that are one option and one variable each, declared once:
  # `variable` is what the server reads, `render` turns the value into its
  # text (`toString` unless given). An entry without a `default` is a
  # nullable option, null by default, whose variable is set only when it
  # is not null; the server's own default applies then.
  settings = {
    port = {
      variable = "PORT";
      type = types.port;
      default = 8080;
      description = "TCP port the registry listens on (PORT).";
    };

    host = {
      variable = "NIXERY_HOST";
      type = types.str;
      default = "0.0.0.0";
      description = "Address the registry binds to (NIXERY_HOST).";
    };

    storageBackend = {
      variable = "NIXERY_STORAGE_BACKEND";
      type = types.enum [ "filesystem" "gcs" "s3" ];
      default = "filesystem";
      description = "Where layers and manifests are stored (NIXERY_STORAGE_BACKEND).";
    };

    storagePath = {
      variable = "STORAGE_PATH";
      type = types.str;
      default = "/var/lib/nixery";
      description = ''
        Directory for layers, manifests and build caches (STORAGE_PATH).
        Created for the service user; paths outside /var/lib are created by
        systemd-tmpfiles.
      '';
    };

    gcsBucket = {
      variable = "GCS_BUCKET";
      type = types.str;
      description = "Google Cloud Storage bucket, required by the `gcs` backend (GCS_BUCKET).";
    };

    storageEmulatorHost = {
      variable = "STORAGE_EMULATOR_HOST";
      type = types.str;
      example = "http://127.0.0.1:4443";
      description = "Talk to a GCS emulator at this address instead of Google (STORAGE_EMULATOR_HOST).";
    };

    s3Bucket = {
      variable = "S3_BUCKET";
      type = types.str;
      description = "S3 bucket, required by the `s3` backend (S3_BUCKET).";
    };

    s3Region = {
      variable = "AWS_REGION";
      type = types.str;
      example = "eu-west-1";
      description = "Region of the S3 bucket (AWS_REGION). Null means us-east-1.";
    };

    s3Endpoint = {
      variable = "AWS_ENDPOINT_URL_S3";
      type = types.str;
      example = "https://minio.example.org:9000";
      description = ''
        An S3-compatible server to use instead of AWS (AWS_ENDPOINT_URL_S3),
        such as MinIO, Ceph RGW, Garage or Cloudflare R2. Selects
        path-style addressing unless `s3Addressing` says otherwise.
      '';
    };

    awsEndpoint = {
      variable = "AWS_ENDPOINT_URL";
      type = types.str;
      description = ''
        Endpoint for every AWS service (AWS_ENDPOINT_URL), as the AWS SDKs
        read it; `s3Endpoint` wins for S3.
      '';
    };

    s3Addressing = {
      variable = "NIXERY_S3_ADDRESSING";
      type = types.enum [ "auto" "path" "virtual" ];
      description = ''
        How URLs name the bucket (NIXERY_S3_ADDRESSING): `path`
        (`host/bucket/key`), `virtual` (`bucket.host/key`). Null or `auto`:
        path-style with an endpoint, virtual-hosted on AWS.
      '';
    };

    s3PresignExpiry = {
      variable = "NIXERY_S3_PRESIGN_EXPIRY";
      type = types.ints.positive;
      description = "Seconds a presigned redirect stays valid (NIXERY_S3_PRESIGN_EXPIRY). Null means 300.";
    };

    s3Profile = {
      variable = "AWS_PROFILE";
      type = types.str;
      description = "Profile of the credentials file to use (AWS_PROFILE). Null means `default`.";
    };

    nixTimeout = {
      variable = "NIX_TIMEOUT";
      type = types.ints.positive;
      default = 60;
      description = "Seconds one Nix build (derivation) may run before Nix aborts it (NIX_TIMEOUT).";
    };

    nixDeadline = {
      variable = "NIXERY_NIX_DEADLINE";
      type = types.ints.positive;
      default = 1800;
      description = "Seconds one image's whole Nix step (evaluation, downloads, builds) may take (NIXERY_NIX_DEADLINE).";
    };

    allowUnfree = {
      variable = "NIXERY_ALLOW_UNFREE";
      type = types.bool;
      render = v: if v then "true" else "false";
      default = false;
      description = "Serve packages with unfree licences, as nixpkgs' config.allowUnfree (NIXERY_ALLOW_UNFREE).";
    };

    popularityUrl = {
      variable = "NIX_POPULARITY_URL";
      type = types.str;
      description = ''
        URL of the popularity map used for layering (NIX_POPULARITY_URL),
        e.g. one produced by `nixery popcount`. Null uses the default.
      '';
    };

    layering = {
      variable = "NIXERY_LAYERING";
      type = types.enum [ "size-rank" "popularity" "in-degree" "size-cohort" ];
      description = ''
        How closures are split into layers (NIXERY_LAYERING). Null uses
        `popularity` (upstream Nixery's algorithm) when popularityUrl is
        set, else `size-rank`.
      '';
    };

    prepareImage = {
      variable = "NIXERY_PREPARE_IMAGE";
      type = types.str;
      description = ''
        Path of the prepare-image program (NIXERY_PREPARE_IMAGE). Null uses
        the one the package was built with.
      '';
    };

    packConcurrency = {
      variable = "NIXERY_PACK_CONCURRENCY";
      type = types.ints.positive;
      description = "Layers packed in parallel (NIXERY_PACK_CONCURRENCY); null means one per CPU core.";
    };

    buildConcurrency = {
      variable = "NIXERY_BUILD_CONCURRENCY";
      type = types.ints.positive;
      description = "Nix builds run in parallel (NIXERY_BUILD_CONCURRENCY); null means one per CPU core.";
    };

    sourceTtl = {
      variable = "NIXERY_SOURCE_TTL";
      type = types.ints.unsigned;
      description = "Seconds a git ref or channel name stays resolved to its commit (NIXERY_SOURCE_TTL); null means 60.";
    };

    channelRemote = {
      variable = "NIXERY_CHANNEL_REMOTE";
      type = types.str;
      description = "Git remote channel names are resolved against (NIXERY_CHANNEL_REMOTE); null means https://github.com/NixOS/nixpkgs.";
    };

    cacheDir = {
      variable = "NIXERY_CACHE_DIR";
      type = types.str;
      description = "Directory of the local manifest tier (NIXERY_CACHE_DIR); null means the service's cache directory.";
    };

    manifestCacheEntries = {
      variable = "NIXERY_MANIFEST_CACHE_ENTRIES";
      type = types.ints.positive;
      description = "Manifests kept in memory (NIXERY_MANIFEST_CACHE_ENTRIES); null means 4096.";
    };

    headerTimeout = {
      variable = "NIXERY_HEADER_TIMEOUT";
      type = types.ints.positive;
      default = 30;
      description = "Seconds a client may take to send a request's headers (NIXERY_HEADER_TIMEOUT).";
    };

    idleTimeout = {
      variable = "NIXERY_IDLE_TIMEOUT";
      type = types.ints.positive;
      default = 60;
      description = "Seconds an idle keep-alive connection is kept open (NIXERY_IDLE_TIMEOUT).";
    };

    buildQueue = {
      variable = "NIXERY_BUILD_QUEUE";
      type = types.ints.unsigned;
      description = "Images that may wait for a build slot before requests get 429 (NIXERY_BUILD_QUEUE); null means the server's default, 16.";
    };

    gcKeep = {
      variable = "NIXERY_GC_KEEP";
      type = types.str;
      example = "30d";
      description = ''
        Collect the storage periodically, keeping images pulled within this
        long (NIXERY_GC_KEEP; 45s, 10m, 12h, 30d). Null turns periodic
        collection off; `nixery gc` can still be run by hand.
      '';
    };

    gcInterval = {
      variable = "NIXERY_GC_INTERVAL";
      type = types.str;
      example = "12h";
      description = "Time between periodic collections (NIXERY_GC_INTERVAL); null means the server's default, 24h.";
    };

    gcGrace = {
      variable = "NIXERY_GC_GRACE";
      type = types.str;
      description = "Objects younger than this are never collected (NIXERY_GC_GRACE); null means the server's default, 1h.";
    };

    gcTouchInterval = {
      variable = "NIXERY_GC_TOUCH_INTERVAL";
      type = types.str;
      description = "A pulled image's use mark is rewritten at most this often (NIXERY_GC_TOUCH_INTERVAL); null means the server's default, 1h.";
    };

    platforms = {
      variable = "NIXERY_PLATFORMS";
      type = types.listOf (types.enum [ "linux/amd64" "linux/arm64" ]);
      render = builtins.concatStringsSep ",";
      example = [ "linux/amd64" "linux/arm64" ];
      description = ''
        Platforms every image is built for (NIXERY_PLATFORMS); with two or
        more, a tag answers an image index naming one image per platform,
        and clients that take only single manifests get the first one's.
        Null means the host's platform alone. Building for a platform other
        than the host's needs a binary cache that has its packages, remote
        builders (`nix.buildMachines`) or `boot.binfmt.emulatedSystems`;
        see docs/deployment.md.
      '';
    };

    logFilter = {
      variable = "RUST_LOG";
      type = types.str;
      default = "info";
      example = "info,nixery=debug";
      description = "tracing log filter (RUST_LOG).";
    };
  };

  settingOption = setting:
    mkOption ({
      type = if setting ? default then setting.type else types.nullOr setting.type;
      default = setting.default or null;
      inherit (setting) description;
    } // optionalAttrs (setting ? example) { inherit (setting) example; });

  # The server's configuration, one variable per setting.
  environment =
    builtins.listToAttrs (map
      (name:
        let setting = settings.${name}; in
        { name = setting.variable; value = (setting.render or toString) cfg.${name}; })
      (builtins.filter (name: cfg.${name} != null) (builtins.attrNames settings)))
    // {
      NIX_REMOTE = "daemon";
      HOME = cacheDirectory;
      XDG_CACHE_HOME = cacheDirectory;
    }
    // sourceVariable
    // optionalAttrs (cfg.gcsCredentialsFile != null) {
      # %d is systemd's credentials directory, readable only by the service.
      GOOGLE_APPLICATION_CREDENTIALS = "%d/${gcsCredentialName}";
    }
    // optionalAttrs (!cfg.s3PresignedUrls) { S3_USE_PRESIGNED_URLS = "false"; }
    // optionalAttrs (cfg.s3CredentialsFile != null) {
      # Read by the AWS credential chain, from systemd's credentials directory.
      AWS_SHARED_CREDENTIALS_FILE = "%d/${s3CredentialName}";
    };

  privilegedPort = cfg.port != 0 && cfg.port < 1024;
in
{
  options.services.nixery = builtins.mapAttrs (_: settingOption) settings // {
    enable = mkEnableOption "Nixery, a container registry that builds images on demand with Nix";

    package = mkOption {
      type = types.package;
      default = (import ../default.nix { inherit pkgs; nix = config.nix.package; }).nixery;
      defaultText = literalExpression "(import ./default.nix { inherit pkgs; nix = config.nix.package; }).nixery";
      description = "The nixery package to run (its wrapper presets the prepare-image program).";
    };

    packageSource = {
      kind = mkOption {
        type = types.enum [ "builtin" "channel" "pkgsRepo" "pkgsPath" ];
        default = "builtin";
        description = ''
          Where package sets come from: `builtin` (the offline package set
          embedded in the binary), `channel` (NIXERY_CHANNEL, a nixpkgs
          channel name), `pkgsRepo` (NIXERY_PKGS_REPO, a git repository
          URL) or `pkgsPath` (NIXERY_PKGS_PATH, a local nixpkgs checkout).
        '';
      };
      value = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "nixos-unstable";
        description = ''
          The channel name, repository URL or path for `kind`; null for
          `builtin`. The service runs with ProtectHome=true, so a `pkgsPath`
          under /home (or /root) is invisible to it: keep package sets
          elsewhere, or relax it with
          `systemd.services.nixery.serviceConfig.ProtectHome = lib.mkForce "read-only"`.
        '';
      };
    };

    gcsCredentialsFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/nixery-gcs.json";
      description = ''
        Service account key for GCS (GOOGLE_APPLICATION_CREDENTIALS). Given
        as a string so the secret never enters the Nix store; systemd hands
        a copy to the service through LoadCredential. Null uses the
        metadata server or other ambient credentials.
      '';
    };

    s3PresignedUrls = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Redirect blob requests to presigned URLs (S3_USE_PRESIGNED_URLS).
        Without, redirects go to the plain object URL and the bucket must
        be publicly readable.
      '';
    };

    s3CredentialsFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/nixery-aws-credentials";
      description = ''
        An AWS shared credentials file (AWS_SHARED_CREDENTIALS_FILE), in
        the `[profile]` / `aws_access_key_id` / `aws_secret_access_key`
        format. Given as a string so the secret never enters the Nix store;
        systemd hands a copy to the service through LoadCredential. Null
        leaves credentials to the rest of the AWS chain (web identity,
        container or instance metadata).
      '';
    };

    nixStoreGc = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Let Nix collect the host's store by itself: Nixery holds no GC
          roots for the images it built, so the store can be collected at
          any time. Sets (as defaults, which the host's own settings
          override) nix.settings.min-free and max-free, and nix.gc's timer.
        '';
      };
      minFree = mkOption {
        type = types.ints.positive;
        default = 2147483648;
        description = "Bytes free below which Nix collects garbage during builds (nix.settings.min-free).";
      };
      maxFree = mkOption {
        type = types.ints.positive;
        default = 10737418240;
        description = "Bytes free at which such a collection stops (nix.settings.max-free).";
      };
      dates = mkOption {
        type = types.str;
        default = "daily";
        description = "When the nix.gc timer runs nix-collect-garbage (nix.gc.dates, systemd calendar syntax).";
      };
      olderThan = mkOption {
        type = types.str;
        default = "14d";
        description = "The nix.gc timer deletes generations older than this (nix-collect-garbage --delete-older-than).";
      };
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to open `port` in the firewall.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.packageSource.kind == "builtin") == (cfg.packageSource.value == null);
        message = "services.nixery.packageSource.value must be set for kind `${cfg.packageSource.kind}`, and only then.";
      }
      {
        assertion = cfg.storageBackend != "gcs" || cfg.gcsBucket != null;
        message = "services.nixery.gcsBucket is required by the `gcs` storage backend.";
      }
      {
        assertion = cfg.storageBackend != "s3" || cfg.s3Bucket != null;
        message = "services.nixery.s3Bucket is required by the `s3` storage backend.";
      }
      {
        assertion = cfg.platforms != [ ];
        message = "services.nixery.platforms must name at least one platform (or be null for the host's).";
      }
      {
        assertion = lib.hasPrefix "/" cfg.storagePath && cfg.storagePath != "/";
        message = "services.nixery.storagePath must be an absolute path below /.";
      }
    ];

    users.users.nixery = {
      isSystemUser = true;
      group = "nixery";
      description = "Nixery registry";
    };
    users.groups.nixery = { };

    systemd.tmpfiles.rules = optional (!underVarLib) "d '${cfg.storagePath}' 0750 nixery nixery - -";

    systemd.services.nixery = {
      description = "Nixery container registry";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "nix-daemon.socket" ];
      requires = [ "nix-daemon.socket" ];
      # nix-build for the image builds, git (and ssh, for git over ssh) for
      # pkgsRepo sources.
      path = [ config.nix.package pkgs.git pkgs.openssh ];
      inherit environment;
      serviceConfig = {
        ExecStart = "${cfg.package}/bin/nixery serve";
        Restart = "on-failure";
        User = "nixery";
        Group = "nixery";
        CacheDirectory = "nixery";
        CacheDirectoryMode = "0700";
        UMask = "0027";
        LoadCredential =
          optional (cfg.gcsCredentialsFile != null) "${gcsCredentialName}:${cfg.gcsCredentialsFile}"
          ++ optional (cfg.s3CredentialsFile != null) "${s3CredentialName}:${cfg.s3CredentialsFile}";
        CapabilityBoundingSet = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        AmbientCapabilities = optional privilegedPort "CAP_NET_BIND_SERVICE";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        # AF_UNIX reaches the nix-daemon socket.
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        SystemCallArchitectures = "native";
      }
      // (if underVarLib then {
        StateDirectory = stateDirectory;
        StateDirectoryMode = "0750";
      } else {
        ReadWritePaths = [ cfg.storagePath ];
      });
    };

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ cfg.port ];

    # Images need their closure only while their layers are packed; the
    # store is Nix's to collect (docs/garbage-collection.md#the-nix-store).
    nix = mkIf cfg.nixStoreGc.enable {
      settings.min-free = mkDefault cfg.nixStoreGc.minFree;
      settings.max-free = mkDefault cfg.nixStoreGc.maxFree;
      gc = {
        automatic = mkDefault true;
        dates = mkDefault cfg.nixStoreGc.dates;
        options = mkDefault "--delete-older-than ${cfg.nixStoreGc.olderThan}";
      };
    };
  };
}
