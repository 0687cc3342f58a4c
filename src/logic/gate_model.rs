// SPDX-License-Identifier: GPL-2.0

//! A model of the write gate (src/dm/gate.rs) between `map` and a migration
//! (src/migrate.rs), checked over every interleaving: one write to the block being moved
//! must never be lost, whatever instant of the migration it arrives at.
//!
//! The model has the kernel's steps and nothing else: the write's loads of the table and the
//! migration mark and its entry into the gate (in the order `map` does them), and the
//! migration's mark, SRCU waits (a wait returns once every entry made before it began has
//! left), copy, publish, unmark and release of parked writes. Test only.

#![cfg(test)]

/// Where the block's data is read from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Home {
    Main,
    Spare,
}

/// One write's steps, in the order `map` takes them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WStep {
    ReadTable,
    Enter,
    LoadMark,
}

#[derive(Clone, Debug)]
struct State {
    // Shared.
    mark: bool,
    table: Home,
    main_has_write: bool,
    spare_has_write: bool,
    // The gate: whether the write is inside it, and whether it entered before a wait began.
    inside: bool,
    covered_by_wait: bool,
    // The write.
    w_pc: usize,
    w_route: Option<Home>,
    w_saw_mark: Option<bool>,
    w_done: bool,
    parked: bool,
    // The migration: its step number.
    m_pc: usize,
}

/// The migration's steps (src/migrate.rs `migrate`).
const M_STEPS: usize = 7; // mark, wait, copy, publish, unmark, wait, release

fn run(order: &[WStep]) -> Result<(), String> {
    let s = State {
        mark: false,
        table: Home::Main,
        main_has_write: false,
        spare_has_write: false,
        inside: false,
        covered_by_wait: false,
        w_pc: 0,
        w_route: None,
        w_saw_mark: None,
        w_done: false,
        parked: false,
        m_pc: 0,
    };
    explore(order, s, &mut Vec::new())
}

fn explore(order: &[WStep], s: State, trace: &mut Vec<String>) -> Result<(), String> {
    let w_can = s.w_pc <= order.len() && !s.w_done && !s.parked;
    let m_can = s.m_pc < M_STEPS && m_enabled(&s);
    if !w_can && !m_can {
        if s.m_pc < M_STEPS || !(s.w_done) {
            return Err(format!("stuck: {s:?} after {trace:?}"));
        }
        let home_has = if s.table == Home::Main { s.main_has_write } else { s.spare_has_write };
        if !home_has {
            return Err(format!("write lost (it went to {:?}, the block lives on {:?}) after {trace:?}", s.w_route, s.table));
        }
        return Ok(());
    }
    if w_can {
        let mut n = s.clone();
        trace.push(w_step(order, &mut n));
        explore(order, n, trace)?;
        trace.pop();
    }
    if m_can {
        let mut n = s.clone();
        trace.push(m_step(&mut n));
        explore(order, n, trace)?;
        trace.pop();
    }
    Ok(())
}

/// Whether the migration's next step can run (a wait blocks on a covered entry).
fn m_enabled(s: &State) -> bool {
    match s.m_pc {
        1 | 5 => !(s.inside && s.covered_by_wait),
        _ => true,
    }
}

fn m_step(s: &mut State) -> String {
    let what = match s.m_pc {
        0 => {
            s.mark = true;
            "M mark"
        }
        1 | 5 => {
            // The wait began with the write inside (it is then covered) or not; a covered
            // write has left by now (the wait was enabled).
            s.covered_by_wait = false;
            "M wait"
        }
        2 => {
            s.spare_has_write = s.main_has_write;
            "M copy"
        }
        3 => {
            s.table = Home::Spare;
            "M publish"
        }
        4 => {
            s.mark = false;
            "M unmark"
        }
        _ => {
            if s.parked {
                // Released to where the block lives now.
                s.parked = false;
                s.spare_has_write = true;
                s.w_done = true;
            }
            "M release"
        }
    };
    s.m_pc += 1;
    what.into()
}

fn w_step(order: &[WStep], s: &mut State) -> String {
    if s.w_pc == order.len() {
        // Submit, by the route and the mark it saw; the gate is left at completion.
        s.w_pc += 1;
        if s.w_saw_mark == Some(true) && s.w_route == Some(Home::Main) {
            // Parked inside the gate: the migration's second wait covers the push.
            s.parked = true;
            s.inside = false;
            return "W park".into();
        }
        match s.w_route {
            Some(Home::Spare) => s.spare_has_write = true,
            _ => s.main_has_write = true,
        }
        s.inside = false;
        s.w_done = true;
        return format!("W write to {:?}", s.w_route.unwrap_or(Home::Main));
    }
    let step = order[s.w_pc];
    s.w_pc += 1;
    match step {
        WStep::ReadTable => s.w_route = Some(s.table),
        WStep::Enter => {
            s.inside = true;
            // A wait that begins from now on covers this entry.
            s.covered_by_wait = true;
        }
        WStep::LoadMark => s.w_saw_mark = Some(s.mark),
    }
    format!("W {step:?}")
}

#[test]
fn gate_then_mark_then_table_loses_no_write() {
    // The order `map` uses.
    run(&[WStep::Enter, WStep::LoadMark, WStep::ReadTable]).unwrap();
}

#[test]
fn table_before_the_gate_loses_a_write() {
    // The order `map` used before 2026-12-04: the table read outside the gate. The write
    // routes by the old table, the whole migration runs, and the write lands on the main
    // device after the block moved.
    let e = run(&[WStep::ReadTable, WStep::Enter, WStep::LoadMark]).unwrap_err();
    assert!(e.contains("write lost"), "{e}");
}

#[test]
fn table_before_the_mark_loses_a_write() {
    let e = run(&[WStep::Enter, WStep::ReadTable, WStep::LoadMark]).unwrap_err();
    assert!(e.contains("write lost"), "{e}");
}
