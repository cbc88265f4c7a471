# A minimal stand-in for nixpkgs' `lib`, enough to evaluate nix/module.nix
# where nixpkgs is not available (CI here has Nix but no nixpkgs).
#
# Only functions the module uses are provided, under their nixpkgs names
# and with the same data shapes (`mkOption` gives `{ _type = "option"; ...}`,
# `mkIf` gives `{ _type = "if"; condition; content; }`, `mkDefault` gives
# `{ _type = "override"; priority = 1000; content; }`), so that a typo in
# the module -- an unknown function, an unknown type, a default of the
# wrong type -- fails evaluation. Each type carries `check`, which
# eval-module.nix applies to defaults and to the values a test sets.
let
  inherit (builtins) all concatStringsSep elem isAttrs isBool isInt isString substring stringLength;

  mkType = name: description: check: { inherit name description check; };

  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;

  types = {
    bool = mkType "bool" "boolean" isBool;
    str = mkType "str" "string" isString;
    port = mkType "port" "16 bit unsigned integer" (v: isInt v && v >= 0 && v <= 65535);
    ints = {
      positive = mkType "positiveInt" "positive integer" (v: isInt v && v > 0);
      unsigned = mkType "unsignedInt" "unsigned integer" (v: isInt v && v >= 0);
    };
    path = mkType "path" "path" (v: builtins.isPath v || (isString v && hasPrefix "/" v));
    package = mkType "package" "package" (v: isAttrs v && (v.type or null) == "derivation");
    enum = values:
      mkType "enum" "one of ${concatStringsSep ", " (map builtins.toJSON values)}" (v: elem v values);
    nullOr = t: mkType "nullOr" "null or ${t.description}" (v: v == null || t.check v);
    listOf = t: mkType "listOf" "list of ${t.description}" (v: builtins.isList v && all t.check v);
  };
in
{
  inherit types hasPrefix;

  mkOption = attrs: attrs // { _type = "option"; };

  mkEnableOption = name: {
    _type = "option";
    type = types.bool;
    default = false;
    example = true;
    description = "Whether to enable ${name}.";
  };

  mkIf = condition: content: { _type = "if"; inherit condition content; };

  mkDefault = content: { _type = "override"; priority = 1000; inherit content; };

  literalExpression = text: { _type = "literalExpression"; inherit text; };

  optional = condition: value: if condition then [ value ] else [ ];

  optionalAttrs = condition: attrs: if condition then attrs else { };

  removePrefix = prefix: s:
    if hasPrefix prefix s
    then substring (stringLength prefix) (stringLength s - stringLength prefix) s
    else s;
}
