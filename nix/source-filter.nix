# Which files of the repository go into the server's build, as a filter for
# `builtins.path`: everything except build output, version control, the
# deployment files and the prose, so that editing docs or the NixOS module
# does not rebuild the server. Files the crate embeds (assets, the offline
# package set under prepare-image/) stay in wherever they live.
#
# Only builtins are used, so nix/tests/eval-source-filter.nix can check it
# without nixpkgs.
root:

let
  excluded = [ ".git" ".gitignore" ".ci" "target" "docs" "nix" "scripts" "default.nix" "README.md" ];
  prefix = toString root + "/";
  relative = path:
    let p = toString path; in
    builtins.substring (builtins.stringLength prefix) (builtins.stringLength p) p;
in
path: type:
let
  rel = relative path;
  top = builtins.head (builtins.split "/" rel);
  name = baseNameOf (toString path);
in
!(builtins.elem top excluded)
  # nix-build's out links, editor backups
  && builtins.match "result.*" top == null
  && builtins.match ".*~|\\.#.*|\\..*\\.swp" name == null
