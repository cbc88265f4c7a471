# Evaluates nix/module.nix with the stub lib of stub-lib.nix and prints
# what a test needs to check it, as JSON:
#
#   nix-instantiate --eval --strict --json nix/tests/eval-module.nix \
#     --argstr settings '{"enable":true,"port":80}'
#
# `settings` holds values for `services.nixery.*` options, keyed by the
# option name below `services.nixery` (`packageSource.kind`). Like the
# NixOS module system, evaluation fails on an unknown option, on a value
# of the wrong type, on a default of the wrong type and on an option
# without a description. `package` cannot be written in JSON and is set to
# a stub derivation.
#
# Output: `options` (name -> type and default), `config` (the module's
# config with `mkIf` and `mkDefault` resolved) and `failedAssertions` (their messages).
{ settings ? "{}" }:

let
  lib = import ./stub-lib.nix;
  module = import ../module.nix;
  user = builtins.fromJSON settings;

  stubDerivation = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  pkgs = { git = stubDerivation "git"; openssh = stubDerivation "openssh"; };
  overrides = { package = stubDerivation "nixery"; };

  # Option declarations do not depend on `config`.
  declared = (module { config = { }; inherit lib pkgs; }).options.services.nixery;

  isOption = v: builtins.isAttrs v && (v._type or null) == "option";

  # [ { name = "packageSource.kind"; value = <option>; } ... ]
  flatten = prefix: set:
    builtins.concatLists (map
      (name:
        let
          v = set.${name};
          path = prefix ++ [ name ];
        in
        if isOption v then [{ name = builtins.concatStringsSep "." path; value = v; }]
        else flatten path v)
      (builtins.attrNames set));
  options = builtins.listToAttrs (flatten [ ] declared);

  unknown = builtins.filter (name: !(options ? ${name})) (builtins.attrNames user);

  checked = name: what: value:
    let option = options.${name}; in
    if option.type.check value then value
    else throw "services.nixery.${name}: ${what} ${builtins.toJSON value} is not a ${option.type.description}";

  valueOf = name: option:
    if overrides ? ${name} then overrides.${name}
    else if user ? ${name} then checked name "value" user.${name}
    else checked name "default" option.default;

  # The option tree again, with values in place of declarations.
  fill = prefix: set:
    builtins.mapAttrs
      (name: v:
        let path = prefix ++ [ name ]; in
        if isOption v then valueOf (builtins.concatStringsSep "." path) v else fill path v)
      set;
  cfg = fill [ ] declared;

  evaluated = module {
    config = { services.nixery = cfg; nix.package = stubDerivation "nix"; };
    inherit lib pkgs;
  };

  # Drop what a false `mkIf` guards; keep derivations as they are.
  dropped = { _dropped = true; };
  resolve = v:
    if builtins.isAttrs v && (v._type or null) == "if" then
      (if v.condition then resolve v.content else dropped)
    else if builtins.isAttrs v && (v._type or null) == "override" then resolve v.content
    else if builtins.isAttrs v && !(v ? outPath) then
      let resolved = builtins.mapAttrs (_: resolve) v; in
      builtins.removeAttrs resolved
        (builtins.filter (n: resolved.${n} == dropped) (builtins.attrNames resolved))
    else if builtins.isList v then map resolve v
    else v;

  config = resolve evaluated.config;

  describe = name: option:
    if !(option ? description) then throw "services.nixery.${name} has no description"
    else {
      type = option.type.description;
      # A default computed from nixpkgs (the package) is shown as its text.
      default =
        if option ? defaultText then option.defaultText.text
        else checked name "default" option.default;
    };
in
if unknown != [ ] then throw "unknown options: services.nixery.${builtins.concatStringsSep ", " unknown}"
# Like the module system, check every value set, used or not.
else builtins.deepSeq (builtins.mapAttrs (name: checked name "value") user) {
  options = builtins.mapAttrs describe options;
  config = if config == dropped then { } else config;
  failedAssertions = map (a: a.message)
    (builtins.filter (a: !a.assertion) (config.assertions or [ ]));
}
