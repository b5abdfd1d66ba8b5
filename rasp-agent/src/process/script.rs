//! The script an interpreter runs. For `sh /dev/shm/x`, `python3 -u /tmp/x.py` or a `#!`
//! script in /tmp (the kernel runs its interpreter with the script's path as an argument),
//! `exe` is the interpreter; what was dropped in a writable place is the first operand
//! after the interpreter's own options. Each interpreter family's options are known well
//! enough to skip those that take a value and to stop at inline code (`-c`, `-e`, `-r`),
//! a module (`-m`) or stdin (`-`, `-s`): then there is no script file.

use crate::events::Argv;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Shell,
    Python,
    Perl,
    Ruby,
    Php,
    Node,
    Lua,
}

fn family(exe_name: &str) -> Option<Family> {
    let n = exe_name;
    let versioned = |prefix: &str| {
        n.strip_prefix(prefix)
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    Some(match n {
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "ksh93" | "mksh" | "ash" | "rbash" | "yash"
        | "posh" => Family::Shell,
        _ if versioned("python") || versioned("pypy") => Family::Python,
        _ if versioned("perl") => Family::Perl,
        _ if versioned("ruby") => Family::Ruby,
        _ if versioned("php") => Family::Php,
        "node" | "nodejs" | "deno" | "bun" => Family::Node,
        _ if versioned("lua") || n == "luajit" => Family::Lua,
        _ => return None,
    })
}

/// What an option does to the scan.
enum Opt {
    /// A flag: go on with the next argument.
    Flag,
    /// Takes the next argument as its value.
    Value,
    /// Inline code, a module or stdin follows: no script file.
    NoScript,
    /// The next argument is the script (`php -f FILE`).
    ScriptNext,
}

fn option(family: Family, arg: &str) -> Opt {
    let long = arg.starts_with("--");
    match family {
        Family::Shell => {
            // -c anywhere in a cluster (`-ec`, `-xc`) means a command string; -s reads
            // stdin; -o/-O take an option name.
            if long {
                return if arg == "--rcfile" || arg == "--init-file" {
                    Opt::Value
                } else {
                    Opt::Flag
                };
            }
            let letters = &arg[1..];
            if letters.contains('c') || letters.contains('s') {
                Opt::NoScript
            } else if letters.ends_with('o') || letters.ends_with('O') {
                Opt::Value
            } else {
                Opt::Flag
            }
        }
        Family::Python => {
            if long {
                return if arg == "--check-hash-based-pycs" {
                    Opt::Value
                } else {
                    Opt::Flag
                };
            }
            // Flags cluster (`-uB`); -c and -m end the options, with the rest attached or
            // as the next argument; -W and -X take a value.
            for (i, c) in arg[1..].char_indices() {
                match c {
                    'c' | 'm' => return Opt::NoScript,
                    'W' | 'X' => {
                        return if i + 2 == arg.len() {
                            Opt::Value
                        } else {
                            Opt::Flag
                        }
                    }
                    _ => {}
                }
            }
            Opt::Flag
        }
        Family::Perl => {
            if long {
                return Opt::Flag;
            }
            let letters = &arg[1..];
            if letters.contains('e') || letters.contains('E') {
                Opt::NoScript
            } else if matches!(letters, "I" | "M" | "m" | "x" | "C") {
                Opt::Value
            } else {
                Opt::Flag
            }
        }
        Family::Ruby => match arg {
            "-e" | "--eval" => Opt::NoScript,
            "-r" | "-I" | "-C" | "-E" | "--encoding" => Opt::Value,
            _ if arg.starts_with("-e") => Opt::NoScript,
            _ => Opt::Flag,
        },
        Family::Php => match arg {
            "-r" | "--run" | "-R" | "-B" | "-E" | "-F" => Opt::NoScript,
            "-f" | "--file" => Opt::ScriptNext,
            "-c" | "-d" | "-z" | "-t" | "-S" => Opt::Value,
            _ => Opt::Flag,
        },
        Family::Node => match arg {
            "-e" | "--eval" | "-p" | "--print" => Opt::NoScript,
            "-r"
            | "--require"
            | "--import"
            | "--loader"
            | "--experimental-loader"
            | "-C"
            | "--conditions"
            | "--input-type"
            | "--title" => Opt::Value,
            _ => Opt::Flag,
        },
        Family::Lua => match arg {
            // `lua -e 'x' script.lua` runs both: skip the chunk, keep looking.
            "-e" | "-l" => Opt::Value,
            _ => Opt::Flag,
        },
    }
}

/// The script file `exe` runs with `argv`, absolute (a relative one is joined to `cwd`),
/// or `None` when `exe` is no known interpreter or runs no file (inline code, a module,
/// stdin).
pub fn script_of(exe: &str, argv: &Argv, cwd: Option<&str>) -> Option<String> {
    let mut args = argv.iter().skip(1).peekable();
    let mut name = exe.rsplit('/').next().unwrap_or(exe);
    if name == "busybox" {
        // `busybox sh x`: the applet is the interpreter.
        name = args.next()?;
    }
    let family = family(name)?;
    while let Some(arg) = args.next() {
        if arg == "--" {
            return args.next().map(|s| absolute(s, cwd));
        }
        if arg == "-" {
            return None;
        }
        if family == Family::Shell && arg.starts_with('+') && arg.len() > 1 {
            if arg.ends_with('o') || arg.ends_with('O') {
                args.next();
            }
            continue;
        }
        if !arg.starts_with('-') || arg.len() == 1 {
            return Some(absolute(arg, cwd));
        }
        match option(family, arg) {
            Opt::Flag => {}
            Opt::Value => {
                args.next();
            }
            Opt::NoScript => return None,
            Opt::ScriptNext => return args.next().map(|s| absolute(s, cwd)),
        }
    }
    None
}

fn absolute(path: &str, cwd: Option<&str>) -> String {
    if path.starts_with('/') {
        crate::events::decode::join_location(None, path, false)
    } else {
        crate::events::decode::join_location(Some(cwd.unwrap_or("")), path, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(exe: &str, argv: &[&str]) -> Option<String> {
        script_of(exe, &Argv::new(argv), Some("/home/u"))
    }

    #[test]
    fn the_first_operand_after_the_interpreters_options() {
        assert_eq!(
            script("/usr/bin/dash", &["sh", "/dev/shm/x"]).as_deref(),
            Some("/dev/shm/x")
        );
        assert_eq!(
            script("/usr/bin/bash", &["bash", "-x", "run.sh", "a"]).as_deref(),
            Some("/home/u/run.sh")
        );
        assert_eq!(
            script("/usr/bin/bash", &["bash", "-o", "pipefail", "../../tmp/x"]).as_deref(),
            Some("/tmp/x")
        );
        assert_eq!(
            script("/usr/bin/bash", &["bash", "+o", "history", "/tmp/x"]).as_deref(),
            Some("/tmp/x")
        );
        assert_eq!(
            script(
                "/usr/bin/python3.11",
                &["python3", "-u", "-W", "ignore", "/tmp/x.py"]
            )
            .as_deref(),
            Some("/tmp/x.py")
        );
        assert_eq!(
            script("/usr/bin/python3.11", &["python3", "-Wignore", "/tmp/x.py"]).as_deref(),
            Some("/tmp/x.py")
        );
        assert_eq!(
            script(
                "/usr/bin/perl",
                &["perl", "-w", "-I", "lib", "/var/tmp/p.pl"]
            )
            .as_deref(),
            Some("/var/tmp/p.pl")
        );
        assert_eq!(
            script("/usr/bin/node", &["node", "--require", "x", "/tmp/a.js"]).as_deref(),
            Some("/tmp/a.js")
        );
        assert_eq!(
            script("/usr/bin/php8.2", &["php", "-f", "/tmp/s.php"]).as_deref(),
            Some("/tmp/s.php")
        );
        assert_eq!(
            script("/usr/bin/busybox", &["busybox", "sh", "/tmp/b"]).as_deref(),
            Some("/tmp/b")
        );
        assert_eq!(
            script("/usr/bin/lua5.4", &["lua", "-e", "x=1", "/tmp/l.lua"]).as_deref(),
            Some("/tmp/l.lua")
        );
        // `#!` scripts: the kernel passes the script's path after the interpreter.
        assert_eq!(
            script("/usr/bin/dash", &["/bin/sh", "-e", "/tmp/hook"]).as_deref(),
            Some("/tmp/hook")
        );
    }

    #[test]
    fn no_script_for_inline_code_modules_stdin_and_other_programs() {
        assert_eq!(script("/usr/bin/bash", &["bash", "-c", "sh /tmp/x"]), None);
        assert_eq!(script("/usr/bin/bash", &["bash", "-ec", "true"]), None);
        assert_eq!(script("/usr/bin/bash", &["bash", "-s", "/tmp/x"]), None);
        assert_eq!(script("/usr/bin/bash", &["bash"]), None);
        assert_eq!(
            script("/usr/bin/python3", &["python3", "-m", "pytest", "/tmp/t"]),
            None
        );
        assert_eq!(
            script("/usr/bin/python3", &["python3", "-c", "print(1)", "/tmp/x"]),
            None
        );
        assert_eq!(script("/usr/bin/python3", &["python3", "-"]), None);
        assert_eq!(
            script("/usr/bin/perl", &["perl", "-ne", "print", "/tmp/f"]),
            None
        );
        assert_eq!(script("/usr/bin/node", &["node", "-e", "1"]), None);
        assert_eq!(script("/usr/bin/cat", &["cat", "/tmp/x"]), None);
        assert_eq!(
            script("/usr/bin/busybox", &["busybox", "cat", "/tmp/x"]),
            None
        );
    }
}
