# prepare-image.nix: the Nix step of nixery.
#
# Given package names, it realises the packages and writes a JSON file whose
# path nix-build prints as the last line of stdout:
#
#   {"runtimeGraph": <exportReferencesGraph data of all packages>,
#    "symlinkLayer": {"size": <bytes>, "tarHash": <hex sha256>, "path": <tarball>}}
#
# or, when some names are not packages of the set:
#
#   {"error": "not_found", "pkgs": [<names>]}
#
# Package names are data: they arrive as one JSON string and are only ever
# used as attribute names, never evaluated. A name is looked up
#   1. as a nested attribute path split on dots ("xorg.xev"),
#   2. with a leading underscore when it starts with a digit
#      ("1password" -> "_1password"),
#   3. with its first component replaced by the top-level attribute whose
#      lower-cased name equals it ("haskellpackages.stylish-haskell" ->
#      "haskellPackages.stylish-haskell").
# Only derivations count as found.
#
# Interfaces of the package set used here, all of them present in nixpkgs
# for many years (and imitated by ./offline-pkgs):
#   lib.toLower, lib.splitString, lib.hasAttrByPath, lib.attrByPath,
#   lib.isDerivation, runCommand, writeText, symlinkJoin, coreutils, bash.
# Build-time tools expected on the PATH of runCommand (nixpkgs' stdenv has
# them): cp, chmod, mkdir, ln, find, sort, tar (GNU), sha256sum, stat, cut.
{
  # JSON array of package names.
  packages,
  # Package source, see load-pkgs.nix.
  srcType,
  srcArgs,
  # Nix system of the image ("x86_64-linux", "aarch64-linux").
  system ? builtins.currentSystem,
  # Path of load-pkgs.nix (a path or an absolute path string).
  loadPkgs ? ./load-pkgs.nix,
}:
let
  load = import loadPkgs { inherit srcType srcArgs; };

  # Packages of the image are built for `system`; the tools that assemble
  # the result run on this machine.
  pkgs = load system;
  buildPkgs = if system == builtins.currentSystem then pkgs else load builtins.currentSystem;
  inherit (buildPkgs) lib;

  requested = builtins.fromJSON packages;

  digits = [ "0" "1" "2" "3" "4" "5" "6" "7" "8" "9" ];
  underscoreDigit = name:
    if builtins.elem (builtins.substring 0 1 name) digits then "_" + name else name;

  # Lower-cased top-level attribute name -> attribute name. Only forced when
  # a name is not found as typed.
  lowerCaseNames = builtins.listToAttrs
    (map (name: { name = lib.toLower name; value = name; }) (builtins.attrNames pkgs));

  derivationAt = attrPath:
    let value = lib.attrByPath attrPath null pkgs; in
    if lib.hasAttrByPath attrPath pkgs && lib.isDerivation value then value else null;

  lookup = name:
    let
      parts = lib.splitString "." name;
      first = underscoreDigit (builtins.head parts);
      rest = builtins.tail parts;
      asTyped = derivationAt parts;
      withUnderscore = derivationAt ([ first ] ++ rest);
      camel = lowerCaseNames.${lib.toLower first} or null;
    in
    if asTyped != null then asTyped
    else if withUnderscore != null then withUnderscore
    else if camel != null then derivationAt ([ camel ] ++ rest)
    else null;

  results = map (name: { inherit name; drv = lookup name; }) requested;
  notFound = map (r: r.name) (builtins.filter (r: r.drv == null) results);

  # The requested packages, one entry per store path.
  contents = builtins.attrValues (builtins.listToAttrs
    (map (r: { name = builtins.unsafeDiscardStringContext r.drv.outPath; value = r.drv; }) results));

  # Nix writes the closure of `contents` (path, closureSize, references,
  # narHash, narSize) into the structured attributes of this build, which
  # copies them out. The attributes file is named by $NIX_ATTRS_JSON_FILE
  # (Nix >= 2.4 sets it; older ones only write .attrs.json into the build
  # directory, which is also the working directory). Neither `$out` nor PATH
  # is set in structured-attrs builds, hence the placeholder and full path.
  runtimeGraph = derivation {
    name = "nixery-runtime-graph.json";
    system = builtins.currentSystem;
    builder = "${buildPkgs.bash}/bin/bash";
    args = [ "-c" ''${buildPkgs.coreutils}/bin/cp "''${NIX_ATTRS_JSON_FILE:-.attrs.json}" "${placeholder "out"}"'' ];
    __structuredAttrs = true;
    exportReferencesGraph.graph = contents;
  };

  # The symlink forest of all packages, as one more layer: what makes
  # /bin/<program> of every package work in the image.
  forest = buildPkgs.symlinkJoin { name = "nixery-symlink-forest"; paths = contents; };

  # Deterministic tarball of the forest plus an empty, world-writable /tmp
  # and /usr/bin/env (scripts' "#!/usr/bin/env" lines): sorted members
  # without a "./" prefix, fixed mtime, owner root.
  symlinkLayer = buildPkgs.runCommand "nixery-symlink-layer" { } ''
    mkdir -p root
    cp -R ${forest}/. root/
    chmod -R u+w root
    mkdir -p root/tmp root/usr/bin
    ln -sfn ${pkgs.coreutils}/bin/env root/usr/bin/env
    find root -type d -exec chmod 0755 {} +
    chmod 1777 root/tmp
    (cd root && find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z) > members
    mkdir -p "$out"
    tar --create --file "$out/layer.tar" --directory root \
      --null --no-recursion --files-from members \
      --format=gnu --mtime=@1 --owner=0 --group=0 --numeric-owner
    size=$(stat -c %s "$out/layer.tar")
    hash=$(sha256sum "$out/layer.tar" | cut -d ' ' -f 1)
    printf '{"size":%s,"tarHash":"%s","path":"%s"}' "$size" "$hash" "$out/layer.tar" > "$out/meta.json"
  '';

  result = buildPkgs.runCommand "nixery-image.json" { } ''
    {
      printf '{"runtimeGraph":'
      cat ${runtimeGraph}
      printf ',"symlinkLayer":'
      cat ${symlinkLayer}/meta.json
      printf '}\n'
    } > "$out"
  '';

  notFoundResult = buildPkgs.writeText "nixery-not-found.json"
    (builtins.toJSON { error = "not_found"; pkgs = notFound; });
in
if !(builtins.isList requested && builtins.all builtins.isString requested) then
  throw "nixery: packages must be a JSON array of strings"
else if notFound != [ ] then notFoundResult
else result
