# Loads the package set named by nixery's package source.
#
#   srcType "nixpkgs": srcArgs is a nixpkgs channel or commit; the GitHub
#                      archive tarball of that ref is fetched.
#   srcType "git":     srcArgs is JSON {"url": ...} plus "rev" (a commit) or
#                      "ref" (a branch or tag); with neither, the
#                      repository's HEAD is used.
#   srcType "path":    srcArgs is the absolute path of a directory holding
#                      a package set (its default.nix).
#
# `allowUnfree` becomes nixpkgs' `config.allowUnfree` (NIXERY_ALLOW_UNFREE);
# nothing else of the user's nixpkgs configuration applies.
#
# The result is a function from a Nix system ("x86_64-linux") to the
# package set imported for that system.
{ srcType, srcArgs, allowUnfree ? false }:
let
  gitArgs = builtins.fromJSON srcArgs;

  source =
    if srcType == "nixpkgs" then
      builtins.fetchTarball "https://github.com/NixOS/nixpkgs/archive/${srcArgs}.tar.gz"
    else if srcType == "git" then
      builtins.fetchGit ({ url = gitArgs.url; }
        // (if gitArgs ? rev then { inherit (gitArgs) rev; } else { })
        // (if gitArgs ? ref then { inherit (gitArgs) ref; } else { }))
    else if srcType == "path" then
      srcArgs
    else
      throw "nixery: unknown package source type '${srcType}'";
in
system: import source {
  inherit system;
  # Neither the user's nixpkgs configuration nor their overlays apply.
  config = { inherit allowUnfree; };
  overlays = [ ];
}
