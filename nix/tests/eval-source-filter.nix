# Applies nix/source-filter.nix to the repository and to sample paths:
#
#   nix-instantiate --eval --strict --json nix/tests/eval-source-filter.nix \
#     --arg root /path/to/repo --argstr samples '["src/main.rs","target/x"]'
#
# Output: `topLevel` (entries of `root` the filter keeps) and `samples`
# (relative path -> kept), the type of a sample being guessed from a
# trailing `/`.
{ root, samples ? "[]" }:

let
  filter = import ../source-filter.nix root;
  entries = builtins.readDir root;
  keep = rel: type: filter (toString root + "/" + rel) type;
in
{
  topLevel = builtins.filter (name: keep name entries.${name}) (builtins.attrNames entries);
  samples = builtins.listToAttrs (map
    (rel: {
      name = rel;
      value =
        let dir = builtins.match "(.*)/" rel; in
        if dir == null then keep rel "regular" else keep (builtins.head dir) "directory";
    })
    (builtins.fromJSON samples));
}
