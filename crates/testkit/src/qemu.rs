//! QEMU (TCG only, never `/dev/kvm`) with its serial console captured.
//!
//! The console is QEMU's stdout (`-serial stdio`). A reader thread splits it
//! into lines, appends them to a log file and wakes waiters; tests call
//! [`Console::wait_for`] with a pattern and a timeout rather than sleeping.
//! The process is killed when the handle is dropped. Every failure message
//! names the log file and quotes its tail.
//!
//! [`Console`] works for any child process, which is how it is tested
//! without QEMU.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::kernels::Arch;
use crate::{io_err, log_dir};

/// A waiting failure: the pattern did not show up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out after {timeout:?} waiting for {pattern:?} on the console\nconsole log: {}\n--- last lines ---\n{tail}", .log.display())]
    Timeout {
        pattern: String,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("process exited ({status}) before {pattern:?} appeared on the console\nconsole log: {}\n--- last lines ---\n{tail}", .log.display())]
    Exited {
        pattern: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
}

#[derive(Default)]
struct State {
    lines: Vec<String>,
    partial: String,
    eof: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking reader thread must not hide the log from the test.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running process whose stdout is a console we can wait on.
pub struct Console {
    child: Child,
    stdin: Option<ChildStdin>,
    shared: Arc<Shared>,
    /// Index of the first line not yet consumed by `wait_for`.
    cursor: usize,
    log: PathBuf,
    status: Option<ExitStatus>,
    /// Joined once the process has exited, so its last stderr lines are in
    /// the log before an error names the log.
    stderr_pump: Option<std::thread::JoinHandle<()>>,
}

impl Console {
    /// Spawns `cmd` with stdout+stderr captured into `<log dir>/<name>-<pid>-<n>.log`.
    pub fn spawn(mut cmd: Command, name: &str) -> crate::Result<Console> {
        let dir = log_dir();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        prune_old_logs(&dir);
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("{name}-{}-{n}.log", std::process::id()));
        let mut log_file = File::create(&log).map_err(io_err(&log))?;
        let _ = writeln!(log_file, "$ {cmd:?}");
        let log_file = Arc::new(Mutex::new(log_file));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| crate::Error::Command {
            command: format!("{cmd:?}"),
            message: e.to_string(),
        })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        });
        if let Some(out) = child.stdout.take() {
            let (s, l) = (shared.clone(), log_file.clone());
            std::thread::spawn(move || pump_stdout(out, &s, &l));
        }
        let stderr_pump = child.stderr.take().map(|err| {
            let l = log_file.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut f) = l.lock() {
                        let _ = writeln!(f, "[stderr] {line}");
                    }
                }
            })
        });
        let stdin = child.stdin.take();
        Ok(Console {
            child,
            stdin,
            shared,
            cursor: 0,
            log,
            status: None,
            stderr_pump,
        })
    }

    /// The console log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything printed so far (complete lines).
    pub fn lines(&self) -> Vec<String> {
        self.shared.lock().lines.clone()
    }

    /// Writes to the process's stdin (the serial console's input).
    pub fn send(&mut self, text: &str) -> std::io::Result<()> {
        match &mut self.stdin {
            Some(s) => {
                s.write_all(text.as_bytes())?;
                s.flush()
            }
            None => Err(std::io::Error::other("stdin already closed")),
        }
    }

    /// Waits until a console line (after the ones earlier calls consumed)
    /// contains `pattern`; returns that line. Only complete lines count.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<String, WaitError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if let Some(i) = st
                .lines
                .iter()
                .skip(self.cursor)
                .position(|l| l.contains(pattern))
            {
                let idx = self.cursor + i;
                self.cursor = idx + 1;
                return Ok(st.lines.get(idx).cloned().unwrap_or_default());
            }
            self.cursor = st.lines.len();
            if st.eof {
                drop(st);
                let status = self.reap(Duration::from_secs(5));
                if let Some(pump) = self.stderr_pump.take() {
                    let _ = pump.join();
                }
                return Err(WaitError::Exited {
                    pattern: pattern.into(),
                    status,
                    log: self.log.clone(),
                    tail: self.tail(40),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                return Err(WaitError::Timeout {
                    pattern: pattern.into(),
                    timeout,
                    log: self.log.clone(),
                    tail: self.tail(40),
                });
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Waits for the process to exit on its own (e.g. the guest powered
    /// off with `-no-reboot`); kills it if it has not after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, WaitError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                return Ok(s);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(WaitError::Timeout {
                    pattern: "<process exit>".into(),
                    timeout,
                    log: self.log.clone(),
                    tail: self.tail(40),
                });
            }
            // Woken by console output or EOF; bounded so an exit without
            // output is still noticed promptly.
            let st = self.shared.lock();
            let _ = self.shared.cond.wait_timeout(st, Duration::from_millis(50));
        }
    }

    /// The last `n` console lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let st = self.shared.lock();
        let start = st.lines.len().saturating_sub(n);
        let mut out = st.lines.get(start..).unwrap_or_default().join("\n");
        if !st.partial.is_empty() {
            out.push('\n');
            out.push_str(&st.partial);
        }
        out
    }

    fn reap(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                return s.to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        "still running, stdout closed".into()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Logs are evidence for the run that made them; a day later they are
/// clutter. Best effort: a log another process is writing is never that old.
fn prune_old_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let day = Duration::from_secs(24 * 3600);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old && e.path().extension().is_some_and(|x| x == "log") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn pump_stdout(mut out: impl Read, shared: &Shared, log: &Mutex<File>) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = buf.get(..n).unwrap_or_default();
        if let Ok(mut f) = log.lock() {
            let _ = f.write_all(chunk);
        }
        let text = String::from_utf8_lossy(chunk);
        let mut st = shared.lock();
        for c in text.chars() {
            match c {
                '\n' => {
                    let line = std::mem::take(&mut st.partial);
                    st.lines.push(line);
                }
                '\r' => {}
                c => st.partial.push(c),
            }
        }
        drop(st);
        shared.cond.notify_all();
    }
    let mut st = shared.lock();
    if !st.partial.is_empty() {
        let line = std::mem::take(&mut st.partial);
        st.lines.push(line);
    }
    st.eof = true;
    drop(st);
    shared.cond.notify_all();
    if let Ok(mut f) = log.lock() {
        let _ = f.flush();
    }
}

/// A disk attached as a virtio block device.
#[derive(Clone, Debug)]
pub struct Drive {
    pub path: PathBuf,
    /// `raw` unless set otherwise.
    pub format: String,
    pub read_only: bool,
}

/// OpenSBI for QEMU's riscv64 `virt` machine, from Debian's `opensbi`
/// package; QEMU's own default (`-bios default`) when that is absent.
pub fn opensbi_firmware() -> PathBuf {
    let p = Path::new(OPENSBI_FW_DYNAMIC);
    if p.is_file() {
        p.to_path_buf()
    } else {
        PathBuf::from("default")
    }
}

/// Where Debian's `opensbi` package puts the generic-platform firmware.
pub const OPENSBI_FW_DYNAMIC: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin";

/// What to boot.
#[derive(Clone, Debug)]
pub struct Qemu {
    pub arch: Arch,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub append: String,
    pub memory_mib: u32,
    pub smp: u32,
    /// `-M`; defaults: `pc` (x86_64), `virt` (aarch64, riscv64).
    pub machine: Option<String>,
    /// `-cpu`; default `cortex-a53` on aarch64, QEMU's default on x86_64.
    pub cpu: Option<String>,
    pub dtb: Option<PathBuf>,
    pub drives: Vec<Drive>,
    /// Appended verbatim after everything else.
    pub extra_args: Vec<String>,
    /// Log file name prefix.
    pub name: String,
}

impl Qemu {
    /// A serial-console boot of `kernel`; `console=` is filled in per arch.
    pub fn new(arch: Arch, kernel: impl Into<PathBuf>) -> Self {
        let console = match arch {
            Arch::X86_64 => "console=ttyS0",
            Arch::Aarch64 => "console=ttyAMA0",
            // virt's NS16550A UART.
            Arch::Riscv64 => "console=ttyS0",
        };
        Qemu {
            arch,
            kernel: kernel.into(),
            initrd: None,
            append: format!("{console} panic=-1"),
            memory_mib: 256,
            smp: 1,
            machine: None,
            cpu: None,
            dtb: None,
            drives: Vec::new(),
            extra_args: Vec::new(),
            name: "qemu".into(),
        }
    }

    pub fn initrd(mut self, p: impl Into<PathBuf>) -> Self {
        self.initrd = Some(p.into());
        self
    }

    /// Appends to the kernel command line.
    pub fn append(mut self, args: &str) -> Self {
        self.append.push(' ');
        self.append.push_str(args);
        self
    }

    pub fn drive(mut self, path: impl Into<PathBuf>) -> Self {
        self.drives.push(Drive {
            path: path.into(),
            format: "raw".into(),
            read_only: false,
        });
        self
    }

    pub fn name(mut self, n: &str) -> Self {
        self.name = n.into();
        self
    }

    pub fn memory(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// The QEMU binary for this architecture.
    pub fn binary(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
            Arch::Riscv64 => "qemu-system-riscv64",
        }
    }

    /// The full command (useful to print for manual reproduction).
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.binary());
        // TCG explicitly: results must not depend on /dev/kvm being there.
        c.args(["-accel", "tcg", "-nodefaults", "-no-user-config"]);
        c.args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ]);
        c.arg("-m").arg(self.memory_mib.to_string());
        c.arg("-smp").arg(self.smp.to_string());
        let machine = self.machine.clone().unwrap_or_else(|| match self.arch {
            Arch::X86_64 => "pc".into(),
            Arch::Aarch64 | Arch::Riscv64 => "virt".into(),
        });
        c.arg("-M").arg(machine);
        let cpu = self.cpu.clone().or_else(|| match self.arch {
            Arch::X86_64 | Arch::Riscv64 => None,
            Arch::Aarch64 => Some("cortex-a53".into()),
        });
        if let Some(cpu) = cpu {
            c.arg("-cpu").arg(cpu);
        }
        if self.arch == Arch::Riscv64 {
            // M-mode firmware: Debian's OpenSBI (package opensbi), which
            // jumps to the kernel QEMU loads (fw_dynamic protocol).
            c.arg("-bios").arg(opensbi_firmware());
        }
        c.arg("-kernel").arg(&self.kernel);
        if let Some(i) = &self.initrd {
            c.arg("-initrd").arg(i);
        }
        if let Some(d) = &self.dtb {
            c.arg("-dtb").arg(d);
        }
        c.arg("-append").arg(&self.append);
        for d in &self.drives {
            let mut spec = format!("file={},format={},if=virtio", d.path.display(), d.format);
            if d.read_only {
                spec.push_str(",readonly=on");
            }
            c.arg("-drive").arg(spec);
        }
        c.args(&self.extra_args);
        c
    }

    /// Starts QEMU; the guest console is the returned [`Console`].
    pub fn spawn(&self) -> crate::Result<Console> {
        Console::spawn(self.command(), &self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Console {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        Console::spawn(c, "testkit-selftest").unwrap()
    }

    #[test]
    fn waits_for_lines_in_order() {
        let mut c = sh("echo one; echo 'two marker'; sleep 0.2; printf 'three\\r\\n'; sleep 30");
        assert_eq!(
            c.wait_for("marker", Duration::from_secs(10)).unwrap(),
            "two marker"
        );
        // "one" was before the cursor: not found again.
        assert_eq!(
            c.wait_for("three", Duration::from_secs(10)).unwrap(),
            "three"
        );
        let e = c.wait_for("one", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, WaitError::Timeout { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains(&c.log_path().display().to_string()) && msg.contains("two marker"),
            "{msg}"
        );
        let log = std::fs::read_to_string(c.log_path()).unwrap();
        assert!(log.contains("two marker"));
    }

    #[test]
    fn exit_before_pattern_is_reported() {
        let mut c = sh("echo bye; echo oops >&2; exit 3");
        let e = c.wait_for("never", Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, WaitError::Exited { .. }), "{e}");
        assert!(e.to_string().contains("exit status: 3"), "{e}");
        assert!(std::fs::read_to_string(c.log_path())
            .unwrap()
            .contains("[stderr] oops"));
    }

    #[test]
    fn wait_exit_and_kill_on_timeout() {
        let mut c = sh("echo done");
        assert!(c.wait_exit(Duration::from_secs(10)).unwrap().success());
        let mut c = sh("sleep 30");
        let t = Instant::now();
        assert!(c.wait_exit(Duration::from_millis(300)).is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn command_line_is_tcg_and_serial() {
        let q = Qemu::new(Arch::Aarch64, "/k")
            .initrd("/i")
            .drive("/d.img")
            .append("quiet");
        let args: Vec<String> = q
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("-accel tcg") && !joined.contains("kvm"),
            "{joined}"
        );
        assert!(joined.contains("-M virt -cpu cortex-a53"), "{joined}");
        assert!(
            joined.contains("console=ttyAMA0 panic=-1 quiet"),
            "{joined}"
        );
        assert!(
            joined.contains("file=/d.img,format=raw,if=virtio"),
            "{joined}"
        );
    }
}
