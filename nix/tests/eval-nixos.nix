# Evaluates nix/module.nix inside a real NixOS system built from a nixpkgs
# tree (`nixos/lib/eval-config.nix`) and prints, as JSON, what
# tests/nix_module_real.rs checks:
#
#   nix-instantiate --eval --strict --json nix/tests/eval-nixos.nix \
#     --arg nixpkgs /path/to/nixpkgs
#
# Only evaluation: the service runs a stand-in package, and the system's
# derivation is instantiated, not built. The two settings besides the
# module's are those the 24.11 snapshot of ../shared/real-nix needs (its
# README); `boot.isContainer` spares a boot loader and file systems.
{ nixpkgs }:

let
  standInOverlay = self: super: {
    shellcheck-minimal = { compiler = { meta.platforms = [ ]; }; };
  };

  system = import (nixpkgs + "/nixos/lib/eval-config.nix") {
    system = "x86_64-linux";
    modules = [
      ../module.nix
      ({ pkgs, ... }: {
        documentation.nixos.enable = false;
        nixpkgs.overlays = [ standInOverlay ];
        boot.isContainer = true;
        system.stateVersion = "24.11";
        # A host Nix other than pkgs.nix, so the wrapper check below can
        # tell the two apart.
        nix.package = pkgs.nixVersions.nix_2_18;
        services.nixery = {
          enable = true;
          package = pkgs.runCommand "nixery-stand-in" { } "mkdir -p $out/bin";
          packageSource = { kind = "pkgsRepo"; value = "ssh://git@example.org/pkgs.git"; };
          allowUnfree = true;
          nixDeadline = 900;
        };
      })
    ];
  };

  inherit (system) config options;
  service = config.systemd.services.nixery;
  lib = system.pkgs.lib;

  # The package the module would run by default, and its wrapper's script.
  defaultPackage = options.services.nixery.package.default;
  hostNixBuild = "${config.nix.package}/bin/nix-build";
in
{
  environment = service.environment;
  path = map (p: p.name) service.path;
  unit = config.systemd.units."nixery.service".text;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  toplevel = config.system.build.toplevel.drvPath;
  hostNix = config.nix.package.name;
  pkgsNix = system.pkgs.nix.name;
  wrapperRunsHostNix = lib.hasInfix
    (builtins.unsafeDiscardStringContext hostNixBuild)
    (builtins.unsafeDiscardStringContext defaultPackage.prepareImage.text);
}
