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
  # Names of the htpasswd file and the token signing key, likewise.
  htpasswdCredentialName = "auth-htpasswd";
  tokenKeyCredentialName = "auth-token-key";

  # Pull authentication: the files through LoadCredential (%d is systemd's
  # credentials directory), the rest as given; nothing without users.
  authEnabled = cfg.auth.htpasswdFile != null;
  authVariables = optionalAttrs authEnabled ({
    NIXERY_AUTH_HTPASSWD = "%d/${htpasswdCredentialName}";
    NIXERY_AUTH_ANONYMOUS = cfg.auth.anonymous;
  }
  // optionalAttrs (cfg.auth.tokenKeyFile != null) { NIXERY_AUTH_TOKEN_KEY = "%d/${tokenKeyCredentialName}"; }
  // optionalAttrs (cfg.auth.service != null) { NIXERY_AUTH_SERVICE = cfg.auth.service; }
  // optionalAttrs (cfg.auth.realm != null) { NIXERY_AUTH_REALM = cfg.auth.realm; }
  // optionalAttrs (cfg.auth.tokenTtl != null) { NIXERY_AUTH_TOKEN_TTL = toString cfg.auth.tokenTtl; });

  sourceVariable = {
    builtin = { };
    channel = { NIXERY_CHANNEL = cfg.packageSource.value; };
    pkgsRepo = { NIXERY_PKGS_REPO = cfg.packageSource.value; };
    pkgsPath = { NIXERY_PKGS_PATH = cfg.packageSource.value; };
  }.${cfg.packageSource.kind};

  # The settings that are one option and one variable each, declared once
  # (variable, type, default, description; `render` turns a value into the
  # variable's text where `toString` does not): the options and the
  # environment both come from this table.
  settings = {
    port = withDefault "PORT" types.port 8080 "TCP port the registry listens on (PORT).";
    host = withDefault "NIXERY_HOST" types.str "0.0.0.0" "Address the registry binds to (NIXERY_HOST).";
    storageBackend = withDefault "NIXERY_STORAGE_BACKEND" (types.enum [ "filesystem" "gcs" "s3" ]) "filesystem" "Where layers and manifests are stored (NIXERY_STORAGE_BACKEND).";
    storagePath = withDefault "STORAGE_PATH" types.str "/var/lib/nixery" ''
        Directory for layers, manifests and build caches (STORAGE_PATH).
        Created for the service user; paths outside /var/lib are created by
        systemd-tmpfiles.
      '';
    gcsCredentialsFile = nullable "GOOGLE_APPLICATION_CREDENTIALS" types.str ''
        Service account key for GCS (GOOGLE_APPLICATION_CREDENTIALS). Given
        as a string so the secret never enters the Nix store; systemd hands
        a copy to the service through LoadCredential. Null uses the
        metadata server or other ambient credentials.
      '' // {
      example = "/run/secrets/nixery-gcs.json";
      # %d is systemd's credentials directory, readable only by the service.
      render = _: "%d/${gcsCredentialName}";
    };
    gcsBucket = nullable "GCS_BUCKET" types.str "Google Cloud Storage bucket, required by the `gcs` backend (GCS_BUCKET).";
    storageEmulatorHost = nullable "STORAGE_EMULATOR_HOST" types.str "Talk to a GCS emulator at this address instead of Google (STORAGE_EMULATOR_HOST)." // { example = "http://127.0.0.1:4443"; };
    s3Bucket = nullable "S3_BUCKET" types.str "S3 bucket, required by the `s3` backend (S3_BUCKET).";
    s3Region = nullable "AWS_REGION" types.str "Region of the S3 bucket (AWS_REGION). Null means us-east-1." // { example = "eu-west-1"; };
    s3Endpoint = nullable "S3_ENDPOINT" types.str ''
        An S3-compatible server to use instead of AWS (S3_ENDPOINT,
        upstream Nixery's name), such as MinIO, Ceph RGW, Garage or
        Cloudflare R2. Selects path-style addressing unless `s3Addressing`
        says otherwise; wins over `awsEndpointS3` and `awsEndpoint`.
      '' // { example = "https://minio.example.org:9000"; };
    awsEndpointS3 = nullable "AWS_ENDPOINT_URL_S3" types.str ''
        The same as the AWS SDKs name it for S3 (AWS_ENDPOINT_URL_S3);
        wins over `awsEndpoint`.
      '';
    awsEndpoint = nullable "AWS_ENDPOINT_URL" types.str ''
        Endpoint for every AWS service (AWS_ENDPOINT_URL), as the AWS SDKs
        read it; `s3Endpoint` and `awsEndpointS3` win for S3.
      '';
    s3AccessKey = nullable "S3_ACCESS_KEY" types.str ''
        Access key id of static S3 credentials (S3_ACCESS_KEY, upstream
        Nixery's name); its secret comes from `s3SecretKeyFile`. Null
        leaves credentials to the AWS chain (`s3CredentialsFile`, web
        identity, container or instance metadata).
      '';
    s3LinkExpiration = nullable "S3_LINK_EXPIRATION" types.str ''
        How long a presigned redirect stays valid, a Go duration as
        upstream Nixery reads it (S3_LINK_EXPIRATION: 5m, 90s, 1h30m); wins
        over `s3PresignExpiry`. Null means five minutes.
      '' // { example = "10m"; };
    s3Addressing = nullable "NIXERY_S3_ADDRESSING" (types.enum [ "auto" "path" "virtual" ]) ''
        How URLs name the bucket (NIXERY_S3_ADDRESSING): `path`
        (`host/bucket/key`), `virtual` (`bucket.host/key`). Null or `auto`:
        path-style with an endpoint, virtual-hosted on AWS.
      '';
    s3PresignExpiry = nullable "NIXERY_S3_PRESIGN_EXPIRY" types.ints.positive "Seconds a presigned redirect stays valid (NIXERY_S3_PRESIGN_EXPIRY). Null means 300.";
    s3CredentialsFile = nullable "AWS_SHARED_CREDENTIALS_FILE" types.str ''
        An AWS shared credentials file (AWS_SHARED_CREDENTIALS_FILE), in
        the `[profile]` / `aws_access_key_id` / `aws_secret_access_key`
        format. Given as a string so the secret never enters the Nix store;
        systemd hands a copy to the service through LoadCredential. Null
        leaves credentials to the rest of the AWS chain (web identity,
        container or instance metadata).
      '' // {
      example = "/run/secrets/nixery-aws-credentials";
      # Read by the AWS credential chain, from systemd's credentials directory.
      render = _: "%d/${s3CredentialName}";
    };
    s3Profile = nullable "AWS_PROFILE" types.str "Profile of the credentials file to use (AWS_PROFILE). Null means `default`.";
    s3SecretKeyFile = nullable "S3_SECRET_KEY" types.str ''
        A file holding the line `S3_SECRET_KEY=<secret>`, the secret of
        `s3AccessKey` (upstream Nixery's variable). Given as a string so
        the secret never enters the Nix store; systemd reads it into the
        service's environment (EnvironmentFile), which the unit file does
        not show.
      '' // {
      example = "/run/secrets/nixery-s3-secret.env";
      # Not an Environment= entry: the file reaches the service through
      # EnvironmentFile below.
      fromFile = true;
    };
    nixTimeout = withDefault "NIX_TIMEOUT" types.ints.positive 60 "Seconds one Nix build (derivation) may run before Nix aborts it (NIX_TIMEOUT).";
    nixDeadline = withDefault "NIXERY_NIX_DEADLINE" types.ints.positive 1800 "Seconds one image's whole Nix step (evaluation, downloads, builds) may take (NIXERY_NIX_DEADLINE).";
    allowUnfree = withDefault "NIXERY_ALLOW_UNFREE" types.bool false "Serve packages with unfree licences, as nixpkgs' config.allowUnfree (NIXERY_ALLOW_UNFREE)." // { render = v: if v then "true" else "false"; };
    popularityUrl = nullable "NIX_POPULARITY_URL" types.str ''
        URL of the popularity map used for layering (NIX_POPULARITY_URL),
        e.g. one produced by `nixery popcount`. Null uses the default.
      '';
    layering = nullable "NIXERY_LAYERING" (types.enum [ "size-rank" "popularity" "in-degree" "size-cohort" ]) ''
        How closures are split into layers (NIXERY_LAYERING). Null uses
        `popularity` (upstream Nixery's algorithm) when popularityUrl is
        set, else `size-rank`.
      '';
    prepareImage = nullable "NIXERY_PREPARE_IMAGE" types.str ''
        Path of the prepare-image program (NIXERY_PREPARE_IMAGE). Null uses
        the one the package was built with.
      '';
    packConcurrency = nullable "NIXERY_PACK_CONCURRENCY" types.ints.positive "Layers packed in parallel (NIXERY_PACK_CONCURRENCY); null means one per CPU core.";
    buildConcurrency = nullable "NIXERY_BUILD_CONCURRENCY" types.ints.positive "Nix builds run in parallel (NIXERY_BUILD_CONCURRENCY); null means one per CPU core.";
    sourceTtl = nullable "NIXERY_SOURCE_TTL" types.ints.unsigned "Seconds a git ref or channel name stays resolved to its commit (NIXERY_SOURCE_TTL); null means 60.";
    channelRemote = nullable "NIXERY_CHANNEL_REMOTE" types.str "Git remote channel names are resolved against (NIXERY_CHANNEL_REMOTE); null means https://github.com/NixOS/nixpkgs.";
    cacheDir = nullable "NIXERY_CACHE_DIR" types.str "Directory of the local manifest tier (NIXERY_CACHE_DIR); null means the service's cache directory.";
    manifestCacheEntries = nullable "NIXERY_MANIFEST_CACHE_ENTRIES" types.ints.positive "Manifests kept in memory (NIXERY_MANIFEST_CACHE_ENTRIES); null means 4096.";
    headerTimeout = withDefault "NIXERY_HEADER_TIMEOUT" types.ints.positive 30 "Seconds a client may take to send a request's headers (NIXERY_HEADER_TIMEOUT).";
    idleTimeout = withDefault "NIXERY_IDLE_TIMEOUT" types.ints.positive 60 "Seconds an idle keep-alive connection is kept open (NIXERY_IDLE_TIMEOUT).";
    buildQueue = nullable "NIXERY_BUILD_QUEUE" types.ints.unsigned "Images that may wait for a build slot before requests get 429 (NIXERY_BUILD_QUEUE); null means the server's default, 16.";
    gcKeep = nullable "NIXERY_GC_KEEP" types.str ''
        Collect the storage periodically, keeping images pulled within this
        long (NIXERY_GC_KEEP; 45s, 10m, 12h, 30d). Null turns periodic
        collection off; `nixery gc` can still be run by hand.
      '' // { example = "30d"; };
    gcInterval = nullable "NIXERY_GC_INTERVAL" types.str "Time between periodic collections (NIXERY_GC_INTERVAL); null means the server's default, 24h." // { example = "12h"; };
    gcGrace = nullable "NIXERY_GC_GRACE" types.str "Objects younger than this are never collected (NIXERY_GC_GRACE); null means the server's default, 1h.";
    gcTouchInterval = nullable "NIXERY_GC_TOUCH_INTERVAL" types.str "A pulled image's use mark is rewritten at most this often (NIXERY_GC_TOUCH_INTERVAL); null means the server's default, 1h.";
    platforms = nullable "NIXERY_PLATFORMS" (types.listOf (types.enum [ "linux/amd64" "linux/arm64" ])) ''
        Platforms every image is built for (NIXERY_PLATFORMS); with two or
        more, a tag answers an image index naming one image per platform,
        and clients that take only single manifests get the first one's.
        Null means the host's platform alone. Building for a platform other
        than the host's needs a binary cache that has its packages, remote
        builders (`nix.buildMachines`) or `boot.binfmt.emulatedSystems`;
        see docs/deployment.md.
      '' // { render = builtins.concatStringsSep ","; example = [ "linux/amd64" "linux/arm64" ]; };
    logFilter = withDefault "RUST_LOG" types.str "info" "tracing log filter (RUST_LOG)." // { example = "info,nixery=debug"; };
  };

  # A setting with a default: the option has it, the variable is always set.
  withDefault = variable: type: default: description: { inherit variable type default description; };
  # A setting whose default is the server's: null, and no variable, unless given.
  nullable = variable: type: description: { inherit variable type description; };

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
      (builtins.filter (name: cfg.${name} != null && !(settings.${name}.fromFile or false)) (builtins.attrNames settings)))
    // {
      NIX_REMOTE = "daemon";
      HOME = cacheDirectory;
      XDG_CACHE_HOME = cacheDirectory;
    }
    // sourceVariable
    // authVariables
    // optionalAttrs (!cfg.s3PresignedUrls) { S3_USE_PRESIGNED_URLS = "false"; };

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

    s3PresignedUrls = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Redirect blob requests to presigned URLs (S3_USE_PRESIGNED_URLS).
        Without, redirects go to the plain object URL and the bucket must
        be publicly readable.
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

    auth = {
      htpasswdFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/nixery-htpasswd";
        description = ''
          htpasswd file of the users who may pull, bcrypt entries as
          `htpasswd -B` writes them (NIXERY_AUTH_HTPASSWD). Given as a string
          so it never enters the Nix store; systemd hands a copy to the
          service through LoadCredential, made when the service starts:
          restart it after changing the file. Null: no authentication,
          anyone may pull and build.
        '';
      };
      tokenKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/nixery-token-key.pem";
        description = ''
          PEM private key (P-256 in PKCS#8, or RSA) that signs pull tokens
          (NIXERY_AUTH_TOKEN_KEY): the Docker token flow. Handed over like
          htpasswdFile. Null: Basic credentials only.
        '';
      };
      anonymous = mkOption {
        type = types.enum [ "none" "cached" "all" ];
        default = "none";
        description = ''
          What clients without credentials may do (NIXERY_AUTH_ANONYMOUS):
          `none`, `cached` (pull images already built, never start a build)
          or `all`.
        '';
      };
      service = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Service name of challenges and tokens (NIXERY_AUTH_SERVICE); null means `nixery`.";
      };
      realm = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://registry.example.org/token";
        description = "URL of the token endpoint as clients reach it (NIXERY_AUTH_REALM), e.g. behind a TLS proxy; null derives it from each request's Host.";
      };
      tokenTtl = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Seconds a pull token stays valid (NIXERY_AUTH_TOKEN_TTL); null means 300.";
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
        assertion = (cfg.s3AccessKey == null) == (cfg.s3SecretKeyFile == null);
        message = "services.nixery.s3AccessKey and s3SecretKeyFile are set together, or neither.";
      }
      {
        assertion = cfg.platforms != [ ];
        message = "services.nixery.platforms must name at least one platform (or be null for the host's).";
      }
      {
        assertion = authEnabled || (cfg.auth.tokenKeyFile == null && cfg.auth.anonymous == "none"
          && cfg.auth.service == null && cfg.auth.realm == null && cfg.auth.tokenTtl == null);
        message = "services.nixery.auth.htpasswdFile is required by the other auth options.";
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
          ++ optional (cfg.s3CredentialsFile != null) "${s3CredentialName}:${cfg.s3CredentialsFile}"
          ++ optional authEnabled "${htpasswdCredentialName}:${cfg.auth.htpasswdFile}"
          ++ optional (cfg.auth.tokenKeyFile != null) "${tokenKeyCredentialName}:${cfg.auth.tokenKeyFile}";
        EnvironmentFile = optional (cfg.s3SecretKeyFile != null) cfg.s3SecretKeyFile;
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
