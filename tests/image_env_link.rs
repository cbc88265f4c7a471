//! `/usr/bin/env` never dangles: an image has it exactly when one of its
//! packages provides `bin/env` (coreutils), pointing to that program.
//! Checked inside images pulled with skopeo and unpacked with umoci.

use std::path::Path;
use std::process::Command;

use support::server::TestServer;
use support::{pull_and_unpack, resolve_in_root, run};

/// Symlinks under `dir` (inside `root`) that do not resolve inside `root`.
fn dangling_links(root: &Path, dir: &str) -> Vec<String> {
    let mut dangling = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join(dir.trim_start_matches('/'))) else {
        return dangling;
    };
    for entry in entries.flatten() {
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        let path = format!("{dir}/{}", entry.file_name().to_string_lossy());
        if is_link && resolve_in_root(root, &path).is_none() {
            dangling.push(path);
        }
    }
    dangling
}

#[test]
fn env_is_absent_from_hello_and_resolves_in_shell() {
    let server = TestServer::builder().start();

    let (_hello_dir, hello) = pull_and_unpack(server.addr(), "hello");
    assert!(
        std::fs::symlink_metadata(hello.join("usr/bin/env")).is_err(),
        "hello has no coreutils, so no /usr/bin/env"
    );
    assert_eq!(dangling_links(&hello, "/bin"), Vec::<String>::new());

    let (_shell_dir, shell) = pull_and_unpack(server.addr(), "shell");
    let env = resolve_in_root(&shell, "/usr/bin/env").expect("/usr/bin/env resolves in shell");
    assert!(env.is_file(), "{}", env.display());
    assert_eq!(dangling_links(&shell, "/usr/bin"), Vec::<String>::new());
    assert_eq!(dangling_links(&shell, "/bin"), Vec::<String>::new());
    let output =
        run(Command::new("chroot")
            .arg(&shell)
            .args(["/usr/bin/env", "echo", "env works"]));
    assert_eq!(output.trim(), "env works");
}
