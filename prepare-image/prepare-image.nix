# prepare-image.nix: the Nix step of nixery.
#
# Given package names, it evaluates to the list of their derivations, so
# that `nix-build --no-out-link` realises exactly the requested packages
# (their default outputs) and prints their store paths on stdout, one a
# line. Nothing else is built: nixery reads the closure of those paths from
# the store (`nix path-info`) and writes the symlink layer itself
# (src/nix/graph.rs, src/symlink_layer/).
#
# Package names are data: they arrive as one JSON string and are only ever
# used as attribute names, never evaluated. A name is looked up
#   1. as a nested attribute path split on dots ("xorg.xev"),
#   2. with a leading underscore when it starts with a digit
#      ("1password" -> "_1password"),
#   3. with its first component replaced by the top-level attribute whose
#      lower-cased name equals it ("haskellpackages.stylish-haskell" ->
#      "haskellPackages.stylish-haskell"),
# and the first of these paths that exists is used.
#
# Refused packages are decided by evaluation alone, before anything is
# built. Each requested name is evaluated in turn (under `builtins.tryEval`)
# and classified; the reasons are
#   not_found         no attribute path of the name exists,
#   not_a_derivation  the attribute is a set, function, ... (`lib`),
#   throws            the attribute throws when evaluated (nixpkgs' removed
#                     packages are aliases that throw),
#   unfree, broken, unsupported, insecure
#                     the derivation fails to evaluate and its `meta` says
#                     why (nixpkgs' check-meta refuses these unless its
#                     `config` allows them),
#   eval_error        the derivation fails to evaluate for another reason.
# When any name is refused, one stderr line per refusal is traced,
#   trace: nixery-refused {"name": ..., "reason": ...}
# and evaluation fails on purpose: by forcing the first refused value whose
# own error message says why (so Nix prints nixpkgs' message as its error),
# or else by throwing "nixery: packages refused". Before each name is
# evaluated, `trace: nixery-evaluating <name as JSON>` is printed, and
# `trace: nixery-evaluated` after the last, so that an error `tryEval`
# cannot catch (a missing file, a type error) can be attributed to the name
# being evaluated.
#
# When `command` names a requested package, one more line is traced,
#   trace: nixery-command {"path": <its store path>, "mainProgram": <its
#   declared meta.mainProgram, or "">}
# from which nixery chooses the image's command.
#
# Interfaces of the package set used here, all of them present in nixpkgs
# for many years (and imitated by ./offline-pkgs):
#   lib.toLower, lib.splitString, lib.hasAttrByPath, lib.attrByPath,
#   lib.isDerivation; lib.meta.availableOn and stdenv.hostPlatform when
#   present.
{
  # JSON array of package names.
  packages,
  # Package source, see load-pkgs.nix.
  srcType,
  srcArgs,
  # Nix system of the image ("x86_64-linux", "aarch64-linux").
  system ? builtins.currentSystem,
  # "true" to let nixpkgs evaluate packages with unfree licences.
  allowUnfree ? "false",
  # Path of load-pkgs.nix (a path or an absolute path string).
  loadPkgs ? ./load-pkgs.nix,
  # Name of the package (one of `packages`) whose main program nixery makes
  # the image's command, or "" for none.
  command ? "",
}:
let
  load = import loadPkgs { inherit srcType srcArgs; allowUnfree = allowUnfree == "true"; };

  # Packages of the image are built for `system`.
  pkgs = load system;
  inherit (pkgs) lib;

  requested = builtins.fromJSON packages;

  digits = [ "0" "1" "2" "3" "4" "5" "6" "7" "8" "9" ];
  underscoreDigit = name:
    if builtins.elem (builtins.substring 0 1 name) digits then "_" + name else name;

  # Lower-cased top-level attribute name -> attribute name. Only forced when
  # a name is not found as typed.
  lowerCaseNames = builtins.listToAttrs
    (map (name: { name = lib.toLower name; value = name; }) (builtins.attrNames pkgs));

  # Whether `attrPath` exists in the package set. Walking it may throw (an
  # intermediate set that throws): it counts as existing, so that its
  # evaluation reports the throw.
  exists = attrPath:
    let walked = builtins.tryEval (lib.hasAttrByPath attrPath pkgs); in
    !walked.success || walked.value;

  # The attribute path of `name` (a list), or null.
  findPath = name:
    let
      parts = lib.splitString "." name;
      first = underscoreDigit (builtins.head parts);
      rest = builtins.tail parts;
      camel = lowerCaseNames.${lib.toLower first} or null;
    in
    if exists parts then parts
    else if exists ([ first ] ++ rest) then [ first ] ++ rest
    else if camel != null && exists ([ camel ] ++ rest) then [ camel ] ++ rest
    else null;

  # `f x`, or `default` when that throws.
  try = f: x: default:
    let r = builtins.tryEval (f x); in if r.success then r.value else default;

  hostPlatform = try (p: p.stdenv.hostPlatform) pkgs { inherit system; };

  # What nixpkgs' check-meta would object to, in its order of checks.
  metaReason = drv:
    let
      meta = try (d: d.meta or { }) drv { };
      licenses = let l = meta.license or [ ]; in if builtins.isList l then l else [ l ];
      unfree = builtins.any (l: !(l.free or true)) licenses;
      broken = meta.broken or false;
      unsupported =
        if lib ? meta && lib.meta ? availableOn
        then !(lib.meta.availableOn hostPlatform drv)
        else (meta ? platforms && !(builtins.elem system meta.platforms))
          || builtins.elem system (meta.badPlatforms or [ ]);
      insecure = (meta.knownVulnerabilities or [ ]) != [ ];
      check = reason: test: if try (t: t) test false then reason else null;
      found = builtins.filter (r: r != null) [
        (check "unfree" unfree)
        (check "broken" broken)
        (check "unsupported" unsupported)
        (check "insecure" insecure)
      ];
    in
    if found == [ ] then "eval_error" else builtins.head found;

  # { name, reason (null when usable), drv, force }: `force` is the value
  # whose evaluation fails with the reason in its own words.
  classify = name:
    let
      path = findPath name;
      value = lib.attrByPath path null pkgs;
      forced = builtins.tryEval value;
      evaluated = builtins.tryEval (builtins.seq value.drvPath (builtins.seq value.outPath true));
      refused = reason: force: { inherit name reason force; drv = null; };
    in
    if path == null then refused "not_found" null
    else if !forced.success then refused "throws" value
    else if !(lib.isDerivation forced.value) then refused "not_a_derivation" null
    else if !evaluated.success then
      (let reason = metaReason value; in
        refused reason (if reason == "eval_error" then value.drvPath else null))
    else { inherit name; reason = null; drv = value; force = null; };

  # Evaluate the names one after the other, announcing each.
  results = builtins.foldl'
    (done: name:
      let r = builtins.trace "nixery-evaluating ${builtins.toJSON name}" (classify name); in
      builtins.seq r.reason (done ++ [ r ]))
    [ ]
    requested;

  # After the last name, `trace: nixery-evaluated`: later failures are not
  # about a name.
  evaluated = builtins.seq results (builtins.trace "nixery-evaluated" results);

  refusals = builtins.filter (r: r.reason != null) evaluated;

  # The requested packages, as nix-build realises them: it builds each
  # derivation's default output and prints its store path.
  contents = map (r: r.drv) results;

  # The package named by `command`, and its meta.mainProgram (or "").
  commandDrv =
    let found = builtins.filter (r: r.name == command && r.drv != null) results; in
    if command == "" || found == [ ] then null else (builtins.head found).drv;
  declaredMainProgram =
    let m = try (d: d.meta.mainProgram or "") commandDrv ""; in
    if commandDrv != null && builtins.isString m then m else "";

  # `trace: nixery-command {"path": ..., "mainProgram": ...}`: the store
  # path of the command package and its declared main program, which
  # nixery checks against the realised bin/ (src/symlink_layer).
  withCommand = value:
    if commandDrv == null then value
    else builtins.trace "nixery-command ${builtins.toJSON {
      path = builtins.unsafeDiscardStringContext commandDrv.outPath;
      mainProgram = declaredMainProgram;
    }}" value;

  # Traces every refusal, then fails with the first refusal's own error.
  refuse =
    let
      traced = builtins.foldl'
        (acc: r: builtins.trace "nixery-refused ${builtins.toJSON { inherit (r) name reason; }}" acc)
        null
        refusals;
      withMessage = builtins.filter (r: r.force != null) refusals;
    in
    builtins.seq traced
      (if withMessage != [ ] then builtins.seq (builtins.head withMessage).force (throw "nixery: packages refused")
       else throw "nixery: packages refused");
in
if !(builtins.isList requested && builtins.all builtins.isString requested) then
  throw "nixery: packages must be a JSON array of strings"
else builtins.seq (builtins.attrNames pkgs)
  (if refusals != [ ] then refuse else withCommand contents)
