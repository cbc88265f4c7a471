//! Images run where people run them, checked with real runtimes: Docker (a
//! private daemon) and podman, both running containers with `--network
//! none`.
//!
//! - Users: every image has `/etc/passwd`, `/etc/group` and
//!   `/etc/nsswitch.conf` with `root` and `nobody`; the `nonroot` and
//!   `user-<uid>` meta-packages make the config's `User` numeric
//!   (`uid:uid`) and add that user with a home it owns.
//! - Command: an image without a shell runs the main program of its first
//!   named package.
//! - Labels: the config names the source, its revision and the image,
//!   and the OCI manifest carries them as annotations.
//! - Meta-packages combine with `arm64` and `NIXERY_PLATFORMS`: every
//!   platform's image has the same user and command (inspected only: this
//!   host cannot run arm64 programs; the arm64 images come from the copy of
//!   the offline set that ignores the system, see `platform_clients.rs`).

use support::docker::Docker;
use support::server::TestServer;
use support::{any_system_pkgs, run};

fn start_server() -> TestServer {
    TestServer::builder().env("NIX_TIMEOUT", "300").start()
}

/// What `bash -c` prints in every container below: uid, gid, user name,
/// whether the home is writable, and whether /tmp is.
const PROBE: &str = "id -u; id -g; whoami; echo $HOME; \
    touch \"$HOME/written\" && echo home-writable; \
    touch /tmp/written && echo tmp-writable";

#[test]
fn docker_runs_nonroot_as_65532_user_1000_as_1000_and_shell_as_root() {
    let server = start_server();
    let host = server.addr().to_string();
    let docker = Docker::start();

    let nonroot = format!("{host}/nonroot/shell");
    docker.pull(&[&nonroot]);
    assert_eq!(
        docker.run(&nonroot, &["bash", "-c", PROBE]),
        "65532\n65532\nnonroot\n/home/nonroot\nhome-writable\ntmp-writable\n"
    );
    assert_eq!(docker.inspect("{{.Config.User}}", &nonroot), "65532:65532");

    let user_1000 = format!("{host}/user-1000/shell");
    docker.pull(&[&user_1000]);
    assert_eq!(
        docker.run(&user_1000, &["bash", "-c", PROBE]),
        "1000\n1000\nuser\n/home/user\nhome-writable\ntmp-writable\n"
    );
    assert_eq!(docker.inspect("{{.Config.User}}", &user_1000), "1000:1000");

    let shell = format!("{host}/shell");
    docker.pull(&[&shell]);
    assert_eq!(docker.run(&shell, &["whoami"]), "root\n");
    assert_eq!(docker.inspect("{{.Config.User}}", &shell), "");
    // The user database every image has.
    let passwd = docker.run(&shell, &["cat", "/etc/passwd", "/etc/group"]);
    assert_eq!(
        passwd,
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/var/empty:/bin/false\n\
         root:x:0:\nnobody:x:65534:\n"
    );
    let nsswitch = docker.run(&shell, &["cat", "/etc/nsswitch.conf"]);
    assert!(nsswitch.contains("passwd: files\n"), "{nsswitch}");
    // Another user can be asked for at run time, by name.
    assert_eq!(docker.run(&shell, &["id", "-u", "nobody"]), "65534\n");
}

#[test]
fn podman_runs_nonroot_as_65532_and_shell_as_root() {
    let server = start_server();
    let host = server.addr().to_string();
    let store = tempfile::tempdir().unwrap();
    // runc, and limits no higher than this host's hard ones: podman's
    // defaults (crun, 1048576 open files) need privileges a test in a
    // container lacks.
    let podman_run = |image: &str, args: &[&str]| {
        run(support::podman(store.path())
            .args(["--runtime", "runc", "run", "--rm", "--network", "none"])
            .args(["--tls-verify=false", "--ulimit", "nofile=1024:1024"])
            .args(["--ulimit", "nproc=1024:1024"])
            .arg(image)
            .args(args))
    };
    assert_eq!(
        podman_run(&format!("{host}/nonroot/shell"), &["bash", "-c", PROBE]),
        "65532\n65532\nnonroot\n/home/nonroot\nhome-writable\ntmp-writable\n"
    );
    assert_eq!(
        podman_run(&format!("{host}/user-1000/shell"), &["bash", "-c", PROBE]),
        "1000\n1000\nuser\n/home/user\nhome-writable\ntmp-writable\n"
    );
    assert_eq!(podman_run(&format!("{host}/shell"), &["whoami"]), "root\n");
}

#[test]
fn docker_runs_the_first_named_packages_main_program_and_shows_the_labels() {
    let server = start_server();
    let host = server.addr().to_string();
    let docker = Docker::start();

    // hello's only program.
    let hello = format!("{host}/nonroot/hello/git");
    docker.pull(&[&hello]);
    assert_eq!(docker.run(&hello, &[]), "Hello, world!\n");
    assert_eq!(
        docker.inspect("{{.Config.User}} {{json .Config.Cmd}}", &hello),
        "65532:65532 [\"/bin/hello\"]"
    );
    let labels: serde_json::Value =
        serde_json::from_str(&docker.inspect("{{json .Config.Labels}}", &hello)).unwrap();
    assert_eq!(
        labels["org.opencontainers.image.source"], "embedded",
        "{labels}"
    );
    assert_eq!(
        labels["org.opencontainers.image.title"], "git/hello/nonroot",
        "{labels}"
    );
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap_or_default();
    assert!(
        revision.len() == 64 && revision.bytes().all(|b| b.is_ascii_hexdigit()),
        "{labels}"
    );
    // The OCI manifest carries the labels as its annotations.
    let oci = server
        .get("/v2/nonroot/hello/git/manifests/latest")
        .accept(support::media::OCI_MANIFEST)
        .expect_status(200)
        .json();
    assert_eq!(oci["annotations"], labels, "{oci}");
    // The same packages named the other way round: git's program.
    let git = format!("{host}/git/hello");
    docker.pull(&[&git]);
    assert_eq!(
        docker.inspect("{{json .Config.Cmd}}", &git),
        "[\"/bin/git\"]"
    );
    // Several programs, one declared meta.mainProgram.
    let grep = format!("{host}/gnugrep");
    docker.pull(&[&grep]);
    assert_eq!(
        docker.inspect("{{json .Config.Cmd}}", &grep),
        "[\"/bin/grep\"]"
    );
    assert_eq!(
        docker.run(&grep, &[]),
        "grep 3.11 (nixery offline package set)\n"
    );
    // Several programs and none declared: no command.
    let coreutils = format!("{host}/coreutils");
    docker.pull(&[&coreutils]);
    assert_eq!(docker.inspect("{{json .Config.Cmd}}", &coreutils), "null");
    // With a shell, bash.
    let shell = format!("{host}/shell/hello");
    docker.pull(&[&shell]);
    assert_eq!(docker.inspect("{{json .Config.Cmd}}", &shell), "[\"bash\"]");
}

#[test]
fn every_platform_of_a_tag_and_arm64_get_the_same_user_and_command() {
    let pkgs = any_system_pkgs();
    let server = TestServer::builder()
        .env("NIX_TIMEOUT", "300")
        .env("NIXERY_PLATFORMS", "linux/amd64,linux/arm64")
        .env("NIXERY_PKGS_PATH", pkgs.path().display().to_string())
        .start();
    let host = server.addr().to_string();
    let docker = Docker::start();
    let shown = "{{.Os}}/{{.Architecture}} {{.Config.User}} {{json .Config.Cmd}}";
    let index = format!("{host}/nonroot/hello:latest");
    for platform in ["linux/arm64", "linux/amd64"] {
        docker.pull(&["--platform", platform, &index]);
        assert_eq!(
            docker.inspect(shown, &index),
            format!("{platform} 65532:65532 [\"/bin/hello\"]")
        );
    }
    assert_eq!(docker.run(&index, &[]), "Hello, world!\n");
    let arm64 = format!("{host}/arm64/user-1000/hello:latest");
    docker.pull(&["--platform", "linux/arm64", &arm64]);
    assert_eq!(
        docker.inspect(shown, &arm64),
        "linux/arm64 1000:1000 [\"/bin/hello\"]"
    );
}
