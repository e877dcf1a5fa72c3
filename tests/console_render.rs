//! Snapshots of the rendered console (ratatui's TestBackend buffer) in its main states: normal,
//! 80×24, the help overlay, a failed service with its alert, a log search, a running job.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ratatui::{Terminal, backend::TestBackend};
use switchboard::{
    api::{
        ConsoleView, DependencyView, EventView, ExitView, HopView, LogView, ReplicaView, RouteView,
        RunView, ServiceRow, TaskView,
    },
    event::{Event, EventKind},
    registry::InstanceState,
    tui::{
        action::{Action, update},
        render,
        state::UiState,
        theme::Theme,
    },
};

fn row(name: &str, state: InstanceState, rate: f64) -> ServiceRow {
    let ready = state == InstanceState::Ready;
    ServiceRow {
        ready: u32::from(ready),
        pid: ready.then_some(4242),
        uptime: ready.then_some(Duration::from_secs(754)),
        cpu: 1.5,
        rss: 12 * 1024 * 1024,
        request_rate: rate,
        p99_us: Some(1024),
        heartbeat_age: Some(Duration::from_millis(300)),
        version: Some("0.1.0".into()),
        rate_history: (0..60).map(|i| (i * 7 % 23) as u64).collect(),
        ..ServiceRow::new(name, state)
    }
}

fn demo_view() -> ConsoleView {
    let mut order = row("order", InstanceState::Ready, 20.0);
    order.depends_on = vec![DependencyView {
        name: "user".into(),
        condition: "ready".into(),
    }];
    order.calls = vec!["user".into()];
    order.tasks = vec![TaskView {
        replica: 0,
        label: "order 17: charge".into(),
        done: 3,
        total: 4,
        state: "running".into(),
    }];
    let mut report = row("report", InstanceState::Stopped, 0.0);
    report.job = true;
    report.runs = vec![RunView {
        run: 1,
        params: "{}".into(),
        duration: Some(Duration::from_secs(12)),
        outcome: Some(Ok("{\"orders\":120}".into())),
    }];
    ConsoleView {
        stack: "demo".into(),
        uptime: Duration::from_secs(3723),
        gateway: Some("127.0.0.1:8787".into()),
        console_cpu: 0.4,
        console_rss: 9 * 1024 * 1024,
        services: vec![
            row("user", InstanceState::Ready, 41.0),
            order,
            row("notification", InstanceState::Ready, 40.0),
            row("storefront", InstanceState::Ready, 0.0),
            report,
        ],
        ..ConsoleView::default()
    }
}

fn logs() -> Vec<LogView> {
    let lines = [
        ("user", "created user 17 <ada@example.com>"),
        ("order", "order 17 accepted for user 17"),
        ("notification", "notified order 17: created"),
        ("order", "order 17 completed"),
        ("notification", "notified order 17: completed"),
        ("storefront", "placed 20 orders in the last second"),
        ("user", "created user 18 <bo@example.com>"),
        ("order", "order 18 rejected: unknown user 99"),
    ];
    lines
        .iter()
        .enumerate()
        .map(|(i, (service, text))| LogView {
            seq: i as u64,
            at: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i as u64),
            service: (*service).into(),
            replica: 0,
            console: false,
            stderr: false,
            text: (*text).into(),
        })
        .collect()
}

fn render(view: &ConsoleView, state: &UiState, width: u16, height: u16) -> String {
    render_logs(view, state, &logs(), (width, height))
}

fn render_logs(view: &ConsoleView, state: &UiState, logs: &[LogView], size: (u16, u16)) -> String {
    let mut terminal = Terminal::new(TestBackend::new(size.0, size.1)).unwrap();
    terminal
        .draw(|frame| {
            render::draw(frame, view, state, logs, &Theme::monochrome());
        })
        .unwrap();
    terminal.backend().to_string()
}

#[test]
fn normal_wide() {
    let view = demo_view();
    let state = UiState::new();
    let screen = render(&view, &state, 140, 32);
    // A p99 is a histogram bucket's bound: at most that, said so.
    assert!(screen.contains("p99 ≤1.0ms"), "{screen}");
    assert!(screen.contains("≤1.0ms "), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn small_terminal_80x24() {
    let view = demo_view();
    let mut state = UiState::new();
    update(&mut state, &view, Action::Down);
    let screen = render(&view, &state, 80, 24);
    // The log prefix fits the longest name with its replica (it was cut to `notificatio…`).
    for must in [
        "SERVICE",
        "STATE",
        "REQ/S",
        "order",
        "logs",
        "notification#0│",
    ] {
        assert!(screen.contains(must), "{must} missing at 80x24:\n{screen}");
    }
    insta::assert_snapshot!(screen);
}

#[test]
fn help_overlay() {
    let view = demo_view();
    let mut state = UiState::new();
    update(&mut state, &view, Action::Help);
    insta::assert_snapshot!(render(&view, &state, 120, 36));
}

/// Help counts wrapped lines: at 120×40 every line shows, the mouse line too; at 80×24 it does
/// not fit, says there is more, and End scrolls to the last lines (`?`, Esc, `q`, the mouse).
#[test]
fn help_fits_and_scrolls_at_80x24() {
    let view = demo_view();
    let mut state = UiState::new();
    update(&mut state, &view, Action::Help);
    let wide = render(&view, &state, 120, 40);
    for must in [
        "this help",
        "close; clear",
        "quit: stop every",
        "wheel scrolls",
    ] {
        assert!(wide.contains(must), "{must} cut at 120x40:\n{wide}");
    }
    assert!(!wide.contains("more:"), "{wide}");
    let top = render(&view, &state, 80, 24);
    assert!(
        top.contains("more: j/k"),
        "no more indicator at 80x24:\n{top}"
    );
    insta::assert_snapshot!("help_80x24_top", top);
    update(&mut state, &view, Action::Bottom);
    let end = render(&view, &state, 80, 24);
    for must in [
        "this help",
        "close; clear",
        "quit: stop every",
        "wheel scrolls",
    ] {
        assert!(end.contains(must), "{must} not reachable at 80x24:\n{end}");
    }
    assert!(end.contains("above"), "{end}");
    insta::assert_snapshot!("help_80x24_end", end);
}

#[test]
fn failed_service_with_alert() {
    let mut view = demo_view();
    view.services[0].state = InstanceState::Failed;
    view.services[0].restarts = 5;
    view.services[0].pid = None;
    view.services[0].exits = vec![ExitView {
        ago: Duration::from_secs(3),
        replica: 0,
        status: "exit 1".into(),
    }];
    let mut state = UiState::new();
    let gave_up = Event {
        at: SystemTime::now(),
        service: "user".into(),
        replica: Some(0),
        kind: EventKind::GaveUp {
            restarts: 5,
            window: Duration::from_secs(60),
            retry_in: None,
        },
    };
    update(
        &mut state,
        &view,
        Action::Lifecycle(Box::new(EventView::from(&gave_up))),
    );
    assert_eq!(state.alerts.len(), 1);
    let screen = render(&view, &state, 120, 30);
    assert!(screen.contains("failed"), "{screen}");
    assert!(screen.contains("1 alert"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn a_replica_ready_again_resolves_the_alert_that_gave_up_on_it() {
    let view = demo_view();
    let mut state = UiState::new();
    let event = |replica: u32, kind: EventKind| Event {
        at: SystemTime::now(),
        service: "user".into(),
        replica: Some(replica),
        kind,
    };
    let gave_up = EventKind::GaveUp {
        restarts: 5,
        window: Duration::from_secs(60),
        retry_in: Some(Duration::from_secs(30)),
    };
    let ready = EventKind::State {
        from: InstanceState::Starting,
        to: InstanceState::Ready,
    };
    for event in [event(0, gave_up), event(1, ready.clone())] {
        update(
            &mut state,
            &view,
            Action::Lifecycle(Box::new(EventView::from(&event))),
        );
    }
    assert_eq!(state.alerts[0].resolved, None, "another replica came up");
    update(
        &mut state,
        &view,
        Action::Lifecycle(Box::new(EventView::from(&event(0, ready)))),
    );
    assert_eq!(
        state.alerts[0].resolved.as_deref(),
        Some("starting → ready")
    );
    let screen = render(&view, &state, 120, 30);
    assert!(screen.contains("next try in 30s, resolved"), "{screen}");
}

#[test]
fn a_closed_breaker_resolves_its_alert_and_the_detail_shows_its_cooldown() {
    let mut view = demo_view();
    let mut state = UiState::new();
    let breaker = |state: &'static str| Event {
        at: SystemTime::now(),
        service: "user".into(),
        replica: None,
        kind: EventKind::Breaker { state },
    };
    update(
        &mut state,
        &view,
        Action::Lifecycle(Box::new(EventView::from(&breaker("open")))),
    );
    let screen = render(&view, &state, 120, 30);
    assert!(screen.contains("1 alert"), "{screen}");
    for event in [breaker("half-open"), breaker("closed")] {
        update(
            &mut state,
            &view,
            Action::Lifecycle(Box::new(EventView::from(&event))),
        );
    }
    assert_eq!(state.alerts.len(), 1, "only the opening is an alert");
    assert_eq!(
        state.alerts[0].resolved.as_deref(),
        Some("circuit breaker closed")
    );
    let screen = render(&view, &state, 120, 30);
    assert!(
        screen.contains("resolved: circuit breaker closed"),
        "{screen}"
    );
    assert!(
        !screen.contains("1 alert"),
        "a resolved alert is not counted: {screen}"
    );
    // The selected service (user, the first row) with its breaker cooling down.
    view.services[0].breaker_cooldown = Some(Duration::from_secs(4));
    let screen = render(&view, &state, 120, 30);
    assert!(screen.contains("breaker open: probes in 4s"), "{screen}");
}

#[test]
fn the_detail_shows_a_failed_service_s_next_try_and_a_stale_heartbeat() {
    let mut view = demo_view();
    let state = UiState::new();
    // The selected service (user, the first row).
    view.services[0].state = InstanceState::Failed;
    view.services[0].retry_in = Some(Duration::from_secs(25));
    let screen = render(&view, &state, 120, 30);
    assert!(screen.contains("next try in 25s"), "{screen}");
    view.services[0].state = InstanceState::Ready;
    view.services[0].stale = true;
    let screen = render(&view, &state, 120, 30);
    assert!(screen.contains("stale"), "{screen}");
}

#[test]
fn a_subscriber_s_events_are_its_rate() {
    let mut view = demo_view();
    let state = UiState::new();
    // The selected service (the first row) takes events and no requests, as notification does.
    view.services[0].request_rate = 0.0;
    view.services[0].event_rate = 40.0;
    // REQ/S shows from 140 columns; beside the side pane at 120, PID and ERR/S outrank it.
    let wide = render(&view, &state, 140, 32);
    assert!(wide.contains("40ev"), "no event rate in the table:\n{wide}");
    let screen = render(&view, &state, 120, 30);
    assert!(
        screen.contains("0 req/s · 40 ev/s"),
        "no event rate in the detail:\n{screen}"
    );
}

#[test]
fn log_search() {
    let view = demo_view();
    let mut state = UiState::new();
    update(&mut state, &view, Action::FocusNext);
    update(&mut state, &view, Action::Search);
    for c in "order 17".chars() {
        update(&mut state, &view, Action::Type(c));
    }
    // The prompt says what `/` means here.
    let typing = render(&view, &state, 120, 30);
    assert!(
        typing.contains("search logs (Tab: filter services): order 17"),
        "{typing}"
    );
    update(&mut state, &view, Action::Submit);
    update(&mut state, &view, Action::SearchPrev);
    let screen = render(&view, &state, 120, 30);
    assert!(screen.contains("matches"), "{screen}");
    // Wide enough, the footer names the log pane's own keys.
    assert!(
        screen.contains("T time L level w wrap v select"),
        "{screen}"
    );
    insta::assert_snapshot!(screen);
}

#[test]
fn running_job() {
    let mut view = demo_view();
    let report = &mut view.services[4];
    report.state = InstanceState::Ready;
    report.pid = Some(777);
    report.tasks = vec![TaskView {
        replica: 0,
        label: "scan orders".into(),
        done: 45,
        total: 120,
        state: "running".into(),
    }];
    let mut state = UiState::new();
    update(&mut state, &view, Action::Bottom);
    update(&mut state, &view, Action::Open);
    // Enter on a job asks for its parameters.
    assert!(matches!(
        state.overlay,
        switchboard::tui::state::Overlay::Prompt(switchboard::tui::state::Prompt::JobParams(_), _)
    ));
    update(&mut state, &view, Action::Cancel);
    state.detail = true;
    let screen = render(&view, &state, 140, 32);
    assert!(screen.contains("scan orders ▕"), "{screen}");
    assert!(screen.contains("45/120 running"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn selecting_and_copying_log_lines() {
    let view = demo_view();
    let mut state = UiState::new();
    update(&mut state, &view, Action::SelectLines);
    update(&mut state, &view, Action::Up);
    update(&mut state, &view, Action::Up);
    let screen = render(&view, &state, 120, 30);
    assert!(screen.contains("selecting 3 line(s)"), "{screen}");
    let effect = update(&mut state, &view, Action::CopyLines);
    let Some(switchboard::tui::action::Effect::Copy { newest, oldest }) = effect else {
        panic!("no copy effect: {effect:?}")
    };
    let text = switchboard::tui::selected_text(&logs(), &view, &state, newest, oldest);
    assert_eq!(
        text,
        "storefront#0 placed 20 orders in the last second\nuser#0 created user 18 <bo@example.com>\norder#0 order 18 rejected: unknown user 99"
    );
    assert!(state.selection.is_none());
    let osc = switchboard::tui::osc52("hi");
    assert_eq!(osc, "\x1b]52;c;aGk=\x07");
}

/// More tasks than the detail pane has lines (order runs up to 32 at once, and beside a short
/// table the pane has room for two or three): the gauges stop at the pane's border, and one
/// line says how many are not shown. They used to be drawn over the border and the log pane.
#[test]
fn tasks_beyond_the_detail_pane_are_counted_not_drawn_over_its_border() {
    let mut view = demo_view();
    view.services[1].tasks = (0..32)
        .map(|i| TaskView {
            replica: 0,
            label: format!("order {}: {}", 100 + i, ["validate", "charge"][i % 2]),
            done: 2,
            total: 4,
            state: "running".into(),
        })
        .collect();
    let mut state = UiState::new();
    update(&mut state, &view, Action::Down);
    for (width, height) in [(140, 32), (80, 24), (140, 9), (80, 8), (30, 6), (121, 5)] {
        let screen = render(&view, &state, width, height);
        for line in screen.lines() {
            let border = line.contains('└') || line.contains('┌');
            assert!(
                !(border && line.contains('▕')),
                "a gauge over a border at {width}x{height}:\n{screen}"
            );
        }
    }
    // Beside the table, whose six rows leave the pane four lines under the sparkline: two
    // gauges, the count of the rest, and a line of text (a third of the room at most).
    let screen = render(&view, &state, 140, 32);
    assert_eq!(screen.matches("/4 running").count(), 2, "{screen}");
    assert!(screen.contains("… 30 more tasks"), "{screen}");
    assert!(screen.contains("depends on user (ready)"), "{screen}");
    insta::assert_snapshot!(screen);

    // Enter opens the pane below the table, where many more fit, and the text still shows.
    update(&mut state, &view, Action::Open);
    let screen = render(&view, &state, 140, 48);
    let gauges = screen.matches("/4 running").count();
    assert!(
        gauges >= 10,
        "only {gauges} gauges below the table:\n{screen}"
    );
    assert!(
        screen.contains(&format!("… {} more tasks", 32 - gauges)),
        "{screen}"
    );
    for text in ["depends on user (ready)", "calls user"] {
        assert!(screen.contains(text), "{text} missing:\n{screen}");
    }
    // Labels of different lengths are padded, so the bars start in one column.
    let bar_columns: BTreeSet<usize> = screen
        .lines()
        .filter(|line| line.contains("/4 running"))
        .map(|line| line.chars().position(|c| c == '▕').unwrap())
        .collect();
    assert_eq!(bar_columns.len(), 1, "bars not aligned:\n{screen}");
}

/// `t`: the recent calls of the selected service, newest last, failures in their code.
#[test]
fn calls_overlay() {
    let mut view = demo_view();
    let call = |at_ms: u64, trace: u64, from: &str, to: &str, error: Option<&str>| HopView {
        at_ms,
        trace,
        from: from.into(),
        to: to.into(),
        method: if to == "order" { "create" } else { "get" }.into(),
        latency_us: 1_250,
        error: error.map(str::to_string),
    };
    let mut state = UiState::new();
    update(&mut state, &view, Action::Down);
    update(&mut state, &view, Action::Calls);
    let empty = render(&view, &state, 100, 30);
    assert!(empty.contains("no calls to or from order yet"), "{empty}");
    // 1 700 000 000 123 ms after the epoch is 22:13:20.123 UTC.
    view.calls = vec![
        call(1_700_000_000_123, 41, "storefront", "order", None),
        call(1_700_000_000_130, 41, "order", "user", None),
        call(
            1_700_000_001_000,
            42,
            "storefront",
            "order",
            Some("circuit_open"),
        ),
    ];
    view.routes = vec![
        RouteView {
            from: "storefront".into(),
            to: "order".into(),
            method: "create".into(),
            requests: 13_340,
            errors: 297,
            p99_us: Some(2048),
        },
        RouteView {
            from: "order".into(),
            to: "user".into(),
            method: "get".into(),
            requests: 13_318,
            errors: 0,
            p99_us: Some(256),
        },
    ];
    let screen = render(&view, &state, 100, 30);
    for must in [
        "routes, since the start",
        "storefront → order.create            13340 calls     297 errors  p99 ≤2.0ms",
        "order → user.get                     13318 calls       0 errors  p99 ≤256µs",
        "recent calls",
        "calls to and from order",
        "22:13:20.123  trace 41",
        "storefront → order.create",
        "order → user.get",
        "1.2ms",
        "circuit_open",
    ] {
        assert!(screen.contains(must), "{must} missing:\n{screen}");
    }
    insta::assert_snapshot!(screen);
    update(&mut state, &view, Action::Calls);
    assert!(!render(&view, &state, 100, 30).contains("calls to and from"));
}

/// A scaled service's detail has a line per replica: state, pid, uptime, CPU, memory, restarts.
#[test]
fn replicas_in_the_detail() {
    let mut view = demo_view();
    let replica =
        |replica: u32, state: InstanceState, pid: Option<u32>, restarts: u32| ReplicaView {
            replica,
            state,
            pid,
            uptime: pid.map(|_| Duration::from_secs(65)),
            restarts,
            cpu: 2.5,
            rss: 15 * 1024 * 1024,
            stale: false,
            retry_in: None,
            backlog: Default::default(),
        };
    view.services[1].instances = vec![
        replica(0, InstanceState::Ready, Some(4242), 0),
        replica(1, InstanceState::Ready, Some(4250), 0),
        replica(2, InstanceState::Backoff, None, 3),
    ];
    let mut state = UiState::new();
    update(&mut state, &view, Action::Down);
    update(&mut state, &view, Action::Open);
    let screen = render(&view, &state, 120, 40);
    for must in [
        "#0 ● ready     pid 4242    up 1m05s    2.5%  15.0M",
        "#1 ● ready     pid 4250",
        "backoff    3 restarts",
    ] {
        assert!(screen.contains(must), "{must} missing:\n{screen}");
    }
    insta::assert_snapshot!(screen);
}

/// Selected log lines are readable in colour: no cell's text is drawn in its background's
/// colour (the service prefix used to be blue on the selection's blue).
#[test]
fn selected_log_lines_are_readable_in_colour() {
    let view = demo_view();
    let mut state = UiState::new();
    update(&mut state, &view, Action::SelectLines);
    for _ in 0..7 {
        update(&mut state, &view, Action::Up);
    }
    let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
    terminal
        .draw(|frame| {
            render::draw(frame, &view, &state, &logs(), &Theme { color: true });
        })
        .unwrap();
    let buffer = terminal.backend().buffer();
    let mut selected = 0;
    for cell in buffer.content() {
        if cell.bg == ratatui::style::Color::Blue && cell.symbol() != " " {
            selected += 1;
            assert_ne!(cell.fg, cell.bg, "`{}` drawn blue on blue", cell.symbol());
        }
    }
    assert!(selected > 100, "no selection drawn");
}

/// A job's parameters longer than the line scroll: the end being typed and the cursor stay on
/// screen at 80 columns, with `…` for the text out of view.
#[test]
fn a_long_job_parameter_prompt_scrolls() {
    let view = demo_view();
    let mut state = UiState::new();
    update(&mut state, &view, Action::Bottom);
    update(&mut state, &view, Action::Open);
    let params = r#"{"from": "2024-01-01", "to": "2024-12-31", "format": "csv", "end": 42}"#;
    for c in params.chars() {
        update(&mut state, &view, Action::Type(c));
    }
    let screen = render(&view, &state, 80, 24);
    let footer = screen.lines().last().unwrap();
    assert!(footer.contains("\"end\": 42}█"), "{footer}");
    assert!(footer.contains("run report with parameters"), "{footer}");
    assert!(footer.contains('…'), "{footer}");
    assert_eq!(footer.chars().count(), 82, "{footer}");
}

/// The log pane's own controls: `T` shows times (UTC), `L` keeps warn and up (read from
/// `level=`, `[ERROR]`, JSON and ` WARN `; the console's own lines stay), a plain program's
/// stderr is marked `!`, and `w` wraps a long line instead of cutting it.
#[test]
fn log_times_levels_stderr_and_wrap() {
    let view = demo_view();
    let line = |i: u64, service: &str, stderr: bool, text: &str| LogView {
        seq: i,
        at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i * 1250),
        service: service.into(),
        replica: 0,
        console: service == "order" && text.starts_with("spawned"),
        stderr,
        text: text.into(),
    };
    let long = format!("level=warn {} the end", "x".repeat(150));
    let lines = vec![
        line(0, "order", true, "spawned pid 42"),
        line(1, "order", true, "level=info started"),
        line(2, "order", true, r#"{"level":"warn","msg":"slow charge"}"#),
        line(3, "cron", false, "nightly job ran"),
        line(4, "cron", true, "[ERROR] disk full"),
        line(5, "user", true, "2024-01-01  WARN user: retrying"),
        line(6, "user", true, "debug=1 nothing to see"),
        line(7, "user", true, &long),
    ];
    let mut state = UiState::new();
    state.focus = switchboard::tui::state::Focus::Logs;
    update(&mut state, &view, Action::Timestamps);
    update(&mut state, &view, Action::LevelFilter);
    update(&mut state, &view, Action::LevelFilter);
    let screen = render_logs(&view, &state, &lines, (120, 30));
    for must in [
        "22:13:20.000 order#0│spawned pid 42",
        "22:13:22.500 order#0│{\"level\":\"warn\"",
        "cron#0!",
        "[ERROR] disk full",
        "user#0│2024-01-01  WARN",
        "[warn+, L: next]",
    ] {
        assert!(screen.contains(must), "{must} missing:\n{screen}");
    }
    for gone in ["started", "nightly job ran", "nothing to see", "the end"] {
        assert!(!screen.contains(gone), "{gone} shown:\n{screen}");
    }
    // Only a service with two log streams has its stderr marked.
    assert!(!screen.contains("order#0!"), "{screen}");
    update(&mut state, &view, Action::Wrap);
    let wrapped = render_logs(&view, &state, &lines, (120, 30));
    assert!(wrapped.contains("xxx the end"), "{wrapped}");
    insta::assert_snapshot!(wrapped);
}

/// A stack whose gateway address was taken says so in the header, local or attached (the
/// view carries it), instead of silently showing no address.
#[test]
fn a_taken_gateway_address_is_in_the_header() {
    let mut view = demo_view();
    view.gateway = None;
    view.gateway_taken = Some("127.0.0.1:8787".into());
    let screen = render(&view, &UiState::new(), 120, 30);
    let header = screen.lines().next().unwrap();
    assert!(
        header.contains("no gateway: 127.0.0.1:8787 taken"),
        "{header}"
    );
}

/// At 120 columns, beside the side pane, the table shows PID (it was left out) and a
/// half-open breaker as `half`, not cut to `half-o`.
#[test]
fn pid_and_a_half_open_breaker_beside_the_side_pane() {
    let mut view = demo_view();
    view.services[1].breaker = "half-open".into();
    let screen = render(&view, &UiState::new(), 120, 30);
    assert!(screen.contains("PID"), "{screen}");
    assert!(!screen.contains("half-o"), "{screen}");
    insta::assert_snapshot!(screen);
}

/// A caller's calls are in the detail beside its requests; the label widens so nothing is cut.
#[test]
fn a_caller_s_calls_are_in_the_detail() {
    let mut view = demo_view();
    view.services[0].call_rate = 20.0;
    view.services[0].event_rate = 3.0;
    let screen = render(&view, &UiState::new(), 120, 30);
    assert!(
        screen.contains("41 req/s · 3 ev/s · 20 calls/s"),
        "no call rate in the detail:\n{screen}"
    );
    insta::assert_snapshot!(screen);
}

/// `order` with three replicas, the third failed and tried again in 3 s, the second's heartbeat
/// stale and 14 orders behind it, the oldest 9 s; `order` selected and expanded (→).
fn expanded_view_and_state() -> (ConsoleView, UiState) {
    let mut view = demo_view();
    let replica = |replica: u32, state: InstanceState, pid: Option<u32>| ReplicaView {
        pid,
        uptime: pid.map(|_| Duration::from_secs(65 + u64::from(replica))),
        cpu: pid.map_or(0.0, |_| 2.5),
        rss: pid.map_or(0, |_| 15 * 1024 * 1024),
        ..ReplicaView::new(replica, state)
    };
    view.services[1].replicas = 3;
    view.services[1].ready = 2;
    view.services[1].instances = vec![
        replica(0, InstanceState::Ready, Some(4301)),
        ReplicaView {
            stale: true,
            backlog: switchboard::api::ReplicaBacklogView {
                waiting: 14,
                published: true,
                oldest_age: Some(Duration::from_secs(9)),
            },
            ..replica(1, InstanceState::Ready, Some(4302))
        },
        ReplicaView {
            restarts: 5,
            retry_in: Some(Duration::from_secs(3)),
            ..replica(2, InstanceState::Failed, None)
        },
    ];
    let mut state = UiState::new();
    update(&mut state, &view, Action::Down);
    update(&mut state, &view, Action::Expand);
    (view, state)
}

/// The character column where `needle` starts on the first screen line containing `on`.
fn column_of(screen: &str, on: &str, needle: &str) -> usize {
    let line = screen.lines().find(|l| l.contains(on)).unwrap();
    line[..line.find(needle).unwrap()].chars().count()
}

/// An expanded service shows a line per replica under it, with its own state, PID, restarts,
/// uptime and CPU/RSS, in the service's columns; a failed replica says when it is tried
/// again, a stale one says stale.
#[test]
fn expanded_replicas_at_120x40() {
    let (view, mut state) = expanded_view_and_state();
    let screen = render(&view, &state, 120, 40);
    for must in [
        "order ▾",
        "  #0           ● ready    4301    0",
        "  #1           ◆ stale    4302    0",
        "  #2 retry 3s  ✖ failed   -       5",
        "report ⚙",
    ] {
        assert!(screen.contains(must), "{must} missing:\n{screen}");
    }
    insta::assert_snapshot!(screen);
    // With the detail below (Enter), the table has the whole width: the replica's PID, uptime,
    // restarts, CPU and RSS line up with the service's.
    update(&mut state, &view, Action::Open);
    let screen = render(&view, &state, 120, 40);
    for (service, replica) in [
        ("4242", "4301"),
        ("12m34s", "1m05s"),
        ("1.5", "2.5"),
        ("12.0M", "15.0M"),
    ] {
        assert_eq!(
            column_of(&screen, "order ▾", service),
            column_of(&screen, "  #0", replica),
            "{replica} is not under {service}:\n{screen}"
        );
    }
}

/// At 80×24 the replica lines keep the trouble columns (state, restarts) the table keeps.
#[test]
fn expanded_replicas_at_80x24() {
    let (view, state) = expanded_view_and_state();
    let screen = render(&view, &state, 80, 24);
    for must in [
        "order ▾",
        "  #0",
        "4301",
        "  #2 retry 3s",
        "✖ failed",
        "report",
    ] {
        assert!(screen.contains(must), "{must} missing:\n{screen}");
    }
    assert_eq!(
        column_of(&screen, "order ▾", "0  "),
        column_of(&screen, "  #2", "5"),
        "RST does not line up:\n{screen}"
    );
    insta::assert_snapshot!(screen);
}

/// Expanded, with a replica line selected, the console draws at every size from 1×1 to
/// 200×50 without a panic, and the selected replica's line is on screen whenever the table
/// has room for a line.
#[test]
fn expanded_replicas_draw_at_every_size() {
    let (view, mut state) = expanded_view_and_state();
    update(&mut state, &view, Action::Down);
    update(&mut state, &view, Action::Down);
    update(&mut state, &view, Action::Down);
    for width in (1..=200).step_by(7) {
        for height in (1..=50).step_by(3) {
            let screen = render(&view, &state, width, height);
            if width >= 40 && height >= 12 {
                assert!(screen.contains("  #2"), "at {width}×{height}:\n{screen}");
            }
        }
    }
}

/// With a replica's line selected in the table, the detail beside it draws that replica's
/// number as selected (and no other's).
#[test]
fn the_detail_marks_the_selected_replica() {
    use ratatui::style::Modifier;
    let (view, mut state) = expanded_view_and_state();
    update(&mut state, &view, Action::Down);
    update(&mut state, &view, Action::Down);
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    terminal
        .draw(|frame| {
            render::draw(frame, &view, &state, &logs(), &Theme::monochrome());
        })
        .unwrap();
    let buffer = terminal.backend().buffer();
    // Whether replica `n`'s number (`#n ●` in the detail, the right 38 %) is drawn selected.
    let selected = |n: &str| {
        (0..40).find_map(|y| {
            (74..116)
                .find(|&x| {
                    [("#", 0), (n, 1), ("●", 3)]
                        .iter()
                        .all(|(s, dx)| buffer[(x + dx, y)].symbol() == *s)
                })
                .map(|x| buffer[(x, y)].modifier.contains(Modifier::REVERSED))
        })
    };
    assert_eq!(selected("1"), Some(true), "{}", terminal.backend());
    assert_eq!(selected("0"), Some(false), "{}", terminal.backend());
}

/// A stack on several hosts: the table gets a HOST column beside the names, blank for the
/// console's own services, and an unreachable host's service shows as such.
#[test]
fn services_on_other_hosts_show_their_host() {
    let mut view = demo_view();
    view.services[0].host = Some("db".into());
    view.services[2].host = Some("mail".into());
    view.services[2].state = InstanceState::Unreachable;
    view.services[2].ready = 0;
    let screen = render(&view, &UiState::default(), 160, 30);
    let header = screen
        .lines()
        .find(|l| l.contains("SERVICE"))
        .expect("a header");
    let service_at = header.find("SERVICE").unwrap();
    let host_at = header.find("HOST").expect("a HOST column");
    assert!(host_at > service_at && host_at < header.find("STATE").unwrap());
    let line = |name: &str| {
        screen
            .lines()
            .find(|l| l.trim_start_matches('"').starts_with(&format!("│{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{screen}"))
            .to_string()
    };
    assert!(line("user").contains(" db "), "{}", line("user"));
    assert!(line("notification").contains("mail"));
    assert!(line("notification").contains("⊘ unreach."));
    // Without services elsewhere, no HOST column.
    let single = render(&demo_view(), &UiState::default(), 160, 30);
    assert!(!single.contains("HOST"), "{single}");
}
