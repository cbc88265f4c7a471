# prepare-image.nix: the Nix step of nixery.
#
# Given package names, it realises the packages and writes a JSON file whose
# path nix-build prints as the last line of stdout:
#
#   {"runtimeGraph": <exportReferencesGraph data of all packages>,
#    "symlinkLayer": {"size": <bytes>, "tarHash": <hex sha256>, "path": <tarball>}}
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
# Every builder written here keeps a shell as its last process: Nix 2.8
# kills a build's process group as soon as the builder's log pipe closes,
# and GNU tools close stdout/stderr just before they exit, so a builder
# that ends by exec'ing one of them is killed at random (tests/
# nix_builders.rs checks this).
#
# Interfaces of the package set used here, all of them present in nixpkgs
# for many years (and imitated by ./offline-pkgs):
#   lib.toLower, lib.splitString, lib.hasAttrByPath, lib.attrByPath,
#   lib.isDerivation, runCommand, symlinkJoin, coreutils, bash;
#   lib.meta.availableOn and stdenv.hostPlatform when present.
# Build-time tools expected on the PATH of runCommand (nixpkgs' stdenv has
# them): cp, chmod, mkdir, ln, find, sort, tar (GNU), sha256sum, stat, cut,
# readlink.
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
  # JSON: null (the image runs as root), or the non-root user of the image,
  # {"name": ..., "uid": <1..2147483647>, "home": "/home/..."}; its gid is
  # its uid. nixery checks these values before passing them.
  user ? "null",
  # Name of the package (one of `packages`) whose main program nixery makes
  # the image's command, or "" for none.
  command ? "",
}:
let
  load = import loadPkgs { inherit srcType srcArgs; allowUnfree = allowUnfree == "true"; };

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

  # The requested packages, one entry per store path.
  contents = builtins.attrValues (builtins.listToAttrs
    (map (r: { name = builtins.unsafeDiscardStringContext r.drv.outPath; value = r.drv; }) results));

  # Nix writes the closure of `contents` (path, closureSize, references,
  # narHash, narSize) into the structured attributes of this build, which
  # copies them out. The attributes file is named by $NIX_ATTRS_JSON_FILE
  # (Nix >= 2.4 sets it; older ones only write .attrs.json into the build
  # directory, which is also the working directory). Neither `$out` nor PATH
  # is set in structured-attrs builds, hence the placeholder and full path.
  # `; true` keeps bash, not cp, as the last process (see the top).
  runtimeGraph = derivation {
    name = "nixery-runtime-graph.json";
    system = builtins.currentSystem;
    builder = "${buildPkgs.bash}/bin/bash";
    args = [ "-c" ''${buildPkgs.coreutils}/bin/cp "''${NIX_ATTRS_JSON_FILE:-.attrs.json}" "${placeholder "out"}"; true'' ];
    __structuredAttrs = true;
    exportReferencesGraph.graph = contents;
  };

  # The symlink forest of all packages, as one more layer: what makes
  # /bin/<program> of every package work in the image.
  forest = buildPkgs.symlinkJoin { name = "nixery-symlink-forest"; paths = contents; };

  imageUser = builtins.fromJSON user;
  hasUser = imageUser != null;
  uid = toString imageUser.uid;

  # The user database of every image, as nixpkgs' fakeNss provides it:
  # root and nobody, plus the image's non-root user when it has one.
  passwd = ''
    root:x:0:0:root:/root:/bin/sh
    nobody:x:65534:65534:nobody:/var/empty:/bin/false
  '' + (if hasUser then "${imageUser.name}:x:${uid}:${uid}:${imageUser.name}:${imageUser.home}:/bin/sh\n" else "");
  group = ''
    root:x:0:
    nobody:x:65534:
  '' + (if hasUser then "${imageUser.name}:x:${uid}:\n" else "");
  nsswitch = ''
    passwd: files
    group: files
    shadow: files
    hosts: files dns
  '';

  # Deterministic tarball of the forest plus an empty, world-writable /tmp,
  # /etc/passwd, /etc/group and /etc/nsswitch.conf (above; they replace any
  # a package brings), root's home /root and nobody's /var/empty, /nix and
  # /nix/store as 0755 directories (the store layers hold only their paths,
  # and runtimes create missing parents with modes a non-root user cannot
  # pass: Docker gives /nix 0600), and, when
  # a package of the image provides bin/env (coreutils, busybox),
  # /usr/bin/env pointing to that program (scripts' "#!/usr/bin/env"
  # lines): sorted members without a "./" prefix, fixed mtime, owner root;
  # then the non-root user's home, owned by that user.
  symlinkLayer = buildPkgs.runCommand "nixery-symlink-layer"
    { inherit passwd group nsswitch; passAsFile = [ "passwd" "group" "nsswitch" ]; } ''
    mkdir -p root
    cp -R ${forest}/. root/
    chmod -R u+w root
    mkdir -p root/tmp root/etc root/root root/var/empty root/nix/store
    rm -f root/etc/passwd root/etc/group root/etc/nsswitch.conf
    cp "$passwdPath" root/etc/passwd
    cp "$groupPath" root/etc/group
    cp "$nsswitchPath" root/etc/nsswitch.conf
    chmod 0644 root/etc/passwd root/etc/group root/etc/nsswitch.conf
    if [ -L root/bin/env ]; then
      mkdir -p root/usr/bin
      ln -sfn "$(readlink root/bin/env)" root/usr/bin/env
    fi
    find root -type d -exec chmod 0755 {} +
    chmod 1777 root/tmp
    chmod 0700 root/root
    chmod 0555 root/var/empty
    ${if hasUser then "mkdir -p root/home" else ""}
    (cd root && find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z) > members
    mkdir -p "$out"
    tar --create --file "$out/layer.tar" --directory root \
      --null --no-recursion --files-from members \
      --format=gnu --mtime=@1 --owner=0 --group=0 --numeric-owner
    ${if !hasUser then "" else ''
      mkdir -p "home${imageUser.home}"
      chmod 0755 "home${imageUser.home}"
      tar --append --file "$out/layer.tar" --directory home \
        --no-recursion "${builtins.substring 1 (-1) imageUser.home}" \
        --format=gnu --mtime=@1 --owner=${uid} --group=${uid} --numeric-owner
    ''}
    size=$(stat -c %s "$out/layer.tar")
    hash=$(sha256sum "$out/layer.tar" | cut -d ' ' -f 1)
    printf '{"size":%s,"tarHash":"%s","path":"%s"}' "$size" "$hash" "$out/layer.tar" > "$out/meta.json"
    true
  '';

  # The package named by `command`, and its meta.mainProgram (or "").
  commandDrv =
    let found = builtins.filter (r: r.name == command && r.drv != null) results; in
    if command == "" || found == [ ] then null else (builtins.head found).drv;
  declaredMainProgram =
    let m = try (d: d.meta.mainProgram or "") commandDrv ""; in
    if commandDrv != null && builtins.isString m then m else "";

  # The JSON result; "mainProgram" is the command package's declared main
  # program when bin/ has it, else its only program in bin/, and is left
  # out when there is none or its name is not a plain file name.
  result = buildPkgs.runCommand "nixery-image.json" {
    commandPackage = if commandDrv == null then "" else commandDrv;
    inherit declaredMainProgram;
  } ''
    program=""
    if [ -n "$commandPackage" ]; then
      if [ -n "$declaredMainProgram" ] && [ -f "$commandPackage/bin/$declaredMainProgram" ] \
        && [ -x "$commandPackage/bin/$declaredMainProgram" ]; then
        program=$declaredMainProgram
      else
        set -- "$commandPackage"/bin/*
        if [ $# -eq 1 ] && [ -f "$1" ] && [ -x "$1" ]; then program=''${1##*/}; fi
      fi
    fi
    case "$program" in
      *[!A-Za-z0-9._+-]* | . | ..) program="" ;;
    esac
    {
      printf '{"runtimeGraph":'
      cat ${runtimeGraph}
      printf ',"symlinkLayer":'
      cat ${symlinkLayer}/meta.json
      if [ -n "$program" ]; then
        printf ',"mainProgram":"%s"' "$program"
      fi
      printf '}\n'
    } > "$out"
    true
  '';

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
  (if refusals != [ ] then refuse else result)
