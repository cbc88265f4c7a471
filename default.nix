# Builds nixery-rs and what it takes to deploy it, from the nixpkgs given:
#
#   nix-build -A nixery          the server, with the prepare-image wrapper preset
#   nix-build -A nixery-image    a container image running it (docker load < result)
#
# and exposes the NixOS module as `nixosModules.nixery`. See
# docs/deployment.md.
#
# Which nixpkgs: the server is built with `buildRustPackage` and
# `cargoLock` and needs a rustc at least Cargo.toml's `rust-version`
# (1.91: the crate uses the 2024 edition and let chains), which means
# nixpkgs 25.11 or a later nixos-unstable; check with
# `nix-instantiate --eval -A rustc.version '<nixpkgs>'`. Older nixpkgs fail
# to build it. The package sets the server serves images from are another
# matter: the Nix files of prepare-image/ work with nixpkgs as old as 20.09
# (tests/nix_real_nixpkgs.rs).
{ pkgs ? import <nixpkgs> { }
  # The Nix whose nix-build the prepare-image wrapper runs; the NixOS
  # module passes the host's (`config.nix.package`), so that images are
  # built by the same Nix as the daemon rather than a second copy.
, nix ? pkgs.nix
  # Packages added to the container image, e.g. tools a custom
  # NIXERY_PKGS_REPO needs to fetch from.
, extraImagePackages ? [ ]
}:

let
  inherit (pkgs) lib;

  cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);
  version = cargoToml.package.version;

  # The Rust crate alone (see nix/source-filter.nix).
  src = builtins.path {
    name = "nixery-src";
    path = ./.;
    filter = import ./nix/source-filter.nix ./.;
  };

  # The registry server binary.
  nixery-server = pkgs.rustPlatform.buildRustPackage {
    pname = "nixery-server";
    inherit version src;
    cargoLock.lockFile = ./Cargo.lock;
    # Shown on the status page (build.rs reads it; there is no .git here).
    env.NIXERY_VERSION = version;
    # aws-lc-sys (TLS for GCS and popcount) is built with cmake; lzma-sys
    # links the system liblzma.
    nativeBuildInputs = [ pkgs.cmake pkgs.perl pkgs.pkg-config ];
    buildInputs = [ pkgs.xz ];
    dontUseCmakeConfigure = true;
    # The test suite needs a Nix daemon, podman, skopeo and a GCS emulator;
    # CI runs it outside of a Nix build.
    doCheck = false;
    meta = {
      inherit (cargoToml.package) description;
      license = lib.licenses.asl20;
      mainProgram = "nixery";
    };
  };

  # The program the server runs to evaluate and build an image's packages
  # (built from prepare-image/).
  nixery-prepare-image = import ./prepare-image {
    inherit pkgs;
    nixBuild = "${nix}/bin/nix-build";
    nix = "${nix}/bin/nix";
  };
  prepareImageProgram = "${nixery-prepare-image}/bin/nixery-prepare-image";

  # The server with NIXERY_PREPARE_IMAGE defaulting to the wrapper above;
  # what a user installing Nixery wants.
  nixery = pkgs.runCommand "nixery-${version}"
    {
      nativeBuildInputs = [ pkgs.makeWrapper ];
      passthru = { server = nixery-server; prepareImage = nixery-prepare-image; };
      meta = nixery-server.meta;
    } ''
    makeWrapper ${nixery-server}/bin/nixery $out/bin/nixery \
      --set-default NIXERY_PREPARE_IMAGE ${prepareImageProgram}
  '';

  # Entry point of the container image: creates the Nix build users and
  # nix.conf (nix/launch.sh), then execs the server.
  nixery-launch = pkgs.writeShellScriptBin "nixery-launch" ''
    export PATH=${lib.makeBinPath [ pkgs.coreutils pkgs.gnugrep ]}''${PATH:+:$PATH}
    export NIXERY_BIN=${nixery-server}/bin/nixery
    export NIXERY_PREPARE_IMAGE=''${NIXERY_PREPARE_IMAGE:-${prepareImageProgram}}
    exec ${pkgs.bash}/bin/bash ${./nix/launch.sh} "$@"
  '';

  # A container image of Nixery with Nix inside, building as root with the
  # image's own store (no daemon).
  nixery-image = pkgs.dockerTools.buildLayeredImage {
    name = "nixery";
    tag = version;
    contents = [
      pkgs.bashInteractive
      pkgs.cacert
      pkgs.coreutils
      pkgs.git # fetching NIXERY_PKGS_REPO
      pkgs.gnutar
      pkgs.gzip
      pkgs.iana-etc
      pkgs.nix
      pkgs.openssh # git over ssh
      nixery-launch
    ] ++ extraImagePackages;
    extraCommands = ''
      mkdir -p tmp etc/nix var/lib/nixery var/empty
      chmod 1777 tmp
    '';
    config = {
      Cmd = [ "${nixery-launch}/bin/nixery-launch" ];
      Env = [
        "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"
        "NIX_SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"
        "STORAGE_PATH=/var/lib/nixery"
        "PORT=8080"
        "USER=root"
      ];
      ExposedPorts."8080/tcp" = { };
      Volumes."/var/lib/nixery" = { };
    };
  };
in
{
  inherit nixery nixery-server nixery-prepare-image nixery-launch nixery-image;

  # NixOS module: `imports = [ (import ./nixery-rs { }).nixosModules.nixery ];`
  nixosModules = {
    nixery = ./nix/module.nix;
    default = ./nix/module.nix;
  };
}
