//! Images name their users and may run as a non-root one: every image has
//! `/etc/passwd`, `/etc/group` and `/etc/nsswitch.conf` with `root` and
//! `nobody`; the `nonroot` and `user-<uid>` meta-packages make the config's
//! `User` numeric (`uid:uid`) and add that user with a home it owns.
//! Checked with real runtimes: Docker (a private daemon) and podman, both
//! running the containers with `--network none`.

use support::docker::Docker;
use support::run;
use support::server::TestServer;

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
