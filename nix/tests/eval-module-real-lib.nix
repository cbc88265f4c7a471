# Evaluates nix/module.nix with a real nixpkgs `lib` (`lib.evalModules`,
# the module system NixOS uses) and prints, as JSON, the type description
# of every option under `services.nixery` and the service's environment for
# `settings` (as in eval-module.nix, keyed by option name):
#
#   nix-instantiate --eval --strict --json nix/tests/eval-module-real-lib.nix \
#     --arg lib /path/to/nixpkgs/lib --argstr settings '{"enable":true}'
#
# The NixOS options the module sets (users, systemd, networking,
# assertions, nix.package) are declared here as loosely typed stand-ins.
{ lib, settings ? "{}" }:

let
  realLib = import lib;
  inherit (realLib) mkOption types;

  stubDerivation = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  user = builtins.fromJSON settings;
  # "packageSource.kind" -> { packageSource.kind = ...; }
  userConfig = realLib.foldl' realLib.recursiveUpdate { }
    (map (name: realLib.setAttrByPath (realLib.splitString "." name) user.${name}) (builtins.attrNames user));

  loose = mkOption { type = types.attrsOf types.anything; default = { }; };

  evaluated = realLib.evalModules {
    modules = [
      ../module.nix
      {
        options = {
          assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
          users = loose;
          systemd = loose;
          networking = loose;
          nix.package = mkOption { type = types.package; default = stubDerivation "nix"; };
        };
        config = {
          _module.args.pkgs = { git = stubDerivation "git"; openssh = stubDerivation "openssh"; };
          services.nixery = userConfig // { package = stubDerivation "nixery"; };
        };
      }
    ];
  };

  options = realLib.filterAttrs (_: o: realLib.isOption o)
    (realLib.mapAttrs' (n: v: { name = n; value = v; }) (flatten [ ] evaluated.options.services.nixery));

  flatten = prefix: set:
    realLib.foldl' (acc: name:
      let v = set.${name}; path = prefix ++ [ name ]; in
      if realLib.isOption v then acc // { ${realLib.concatStringsSep "." path} = v; }
      else if builtins.isAttrs v then acc // flatten path v
      else acc) { } (builtins.attrNames set);

  config = evaluated.config;
in
{
  types = realLib.mapAttrs (_: o: o.type.description) options;
  descriptions = realLib.mapAttrs (_: o: o.description or null) options;
  environment = if config.services.nixery.enable then config.systemd.services.nixery.environment else { };
  path = if config.services.nixery.enable then map (p: p.name) config.systemd.services.nixery.path else [ ];
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
}
