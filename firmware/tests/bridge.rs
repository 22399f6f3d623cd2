//! The bridge core under a fake clock: every state transition, both sides of every timeout,
//! refused frames of every kind, and the Modbus tables with their exception paths.

mod common;

use common::*;
use firmware::bridge::Refusal;
use firmware::registers as reg;
use firmware::{Bridge, Config, Event, Pattern, State, TriggerAction, TriggerReason};
use proto::Flags;

fn armed_at(t: u64) -> (Bridge<'static>, Host) {
    let mut b = bridge();
    let mut host = Host::new();
    send(&mut b, t, &host.arm());
    assert_eq!(
        b.state(),
        State::Armed {
            deadline_ms: t + TIMEOUT_MS
        }
    );
    assert_eq!(events(&mut b), [Event::Armed]);
    (b, host)
}

fn triggered(b: &Bridge<'_>) -> bool {
    matches!(b.state(), State::Triggered { .. })
}

#[test]
fn a_bridge_starts_disarmed_and_ordinary_heartbeats_never_arm_it() {
    let mut b = bridge();
    let mut host = Host::new();
    assert_eq!(b.state(), State::Disarmed);
    let out = b.outputs();
    assert!(!out.power_cut && !out.reset_asserted);
    for t in (0..20_000).step_by(700) {
        send(&mut b, t, &host.heartbeat());
        b.tick(t + 1);
    }
    b.tick(60_000);
    assert_eq!(b.state(), State::Disarmed);
    assert_eq!(b.counters().heartbeats, 29);
    assert_eq!(b.counters().triggers, 0);
    assert!(events(&mut b).is_empty());
    assert_eq!(b.pattern(), Pattern::Disarmed);
}

#[test]
fn heartbeats_before_the_deadline_keep_it_quiet() {
    let (mut b, mut host) = armed_at(0);
    for t in (900..30_000).step_by(900) {
        b.tick(t - 1);
        send(&mut b, t, &host.heartbeat());
        assert_eq!(
            b.state(),
            State::Armed {
                deadline_ms: t + TIMEOUT_MS
            }
        );
    }
    assert_eq!(b.counters().triggers, 0);
    assert_eq!(b.pattern(), Pattern::Armed);
    assert!(!b.outputs().power_cut);
}

#[test]
fn the_timeout_fires_at_the_deadline_and_not_a_millisecond_before() {
    let (mut b, mut host) = armed_at(100);
    b.tick(1_099);
    assert!(!triggered(&b));
    send(&mut b, 1_099, &host.heartbeat());
    b.tick(2_098);
    assert_eq!(b.state(), State::Armed { deadline_ms: 2_099 });
    assert!(!b.outputs().power_cut);
    b.tick(2_099);
    assert_eq!(b.state(), State::Triggered { until_ms: 2_599 });
    assert!(b.outputs().power_cut);
    assert!(!b.outputs().reset_asserted);
    assert_eq!(
        events(&mut b),
        [Event::Triggered {
            reason: TriggerReason::HeartbeatTimeout,
            attempt: 1
        }]
    );
    assert_eq!(b.input_register(reg::REG_LAST_TRIGGER), Some(1));
    assert_eq!(b.input_register(reg::REG_TRIGGERS), Some(1));
}

#[test]
fn a_heartbeat_arriving_exactly_at_the_deadline_is_too_late() {
    let (mut b, mut host) = armed_at(0);
    send(&mut b, TIMEOUT_MS, &host.heartbeat());
    assert!(triggered(&b), "{:?}", b.state());
    // The frame was authentic but changes nothing during the pulse.
    assert_eq!(b.counters().heartbeats, 2);
    assert_eq!(b.state(), State::Triggered { until_ms: 1_500 });
}

#[test]
fn the_pulse_ends_after_the_trigger_time_and_the_host_gets_its_grace() {
    let (mut b, mut host) = armed_at(0);
    b.tick(1_000);
    events(&mut b);
    b.tick(1_499);
    assert!(b.outputs().power_cut);
    b.tick(1_500);
    assert_eq!(b.state(), State::Grace { until_ms: 4_500 });
    assert!(!b.outputs().power_cut);
    assert_eq!(events(&mut b), [Event::Released]);
    assert_eq!(b.pattern(), Pattern::Grace);
    // The booted host's first heartbeat ends the grace period.
    b.tick(4_499);
    send(&mut b, 4_499, &host.heartbeat());
    assert_eq!(b.state(), State::Armed { deadline_ms: 5_499 });
    assert_eq!(events(&mut b), [Event::HostUp]);
}

#[test]
fn a_host_that_does_not_come_back_is_retried_then_given_up() {
    let (mut b, _host) = armed_at(0);
    b.tick(1_000);
    b.tick(1_500);
    assert_eq!(b.state(), State::Grace { until_ms: 4_500 });
    b.tick(4_499);
    assert!(!triggered(&b));
    b.tick(4_500);
    assert_eq!(b.state(), State::Triggered { until_ms: 5_000 });
    b.tick(5_000);
    b.tick(8_000);
    // triggers_max = 2: the third expiry gives up instead of cycling power again.
    assert_eq!(b.state(), State::Disarmed);
    assert!(!b.outputs().power_cut);
    assert_eq!(
        events(&mut b),
        [
            Event::Triggered {
                reason: TriggerReason::HeartbeatTimeout,
                attempt: 1
            },
            Event::Released,
            Event::Triggered {
                reason: TriggerReason::BootTimeout,
                attempt: 2
            },
            Event::Released,
            Event::GaveUp,
        ]
    );
    assert_eq!(b.counters().triggers, 2);
    assert_eq!(b.input_register(reg::REG_LAST_TRIGGER), Some(2));
}

#[test]
fn a_heartbeat_between_triggers_resets_the_attempt_count() {
    let (mut b, mut host) = armed_at(0);
    b.tick(1_000);
    b.tick(1_500);
    send(&mut b, 2_000, &host.heartbeat());
    b.tick(3_000);
    b.tick(3_500);
    b.tick(6_500);
    b.tick(7_000);
    // Attempts 1 (timeout), then after a heartbeat 1 again (timeout), 2 (boot): not given up.
    let triggers: Vec<_> = events(&mut b)
        .into_iter()
        .filter_map(|e| match e {
            Event::Triggered { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(triggers, [1, 1, 2]);
    assert_eq!(b.state(), State::Grace { until_ms: 10_000 });
}

#[test]
fn the_reset_action_pulses_the_reset_line_and_leaves_the_power_alone() {
    let mut b = Bridge::new(Config {
        action: TriggerAction::Reset,
        ..config()
    })
    .expect("valid");
    let mut host = Host::new();
    send(&mut b, 0, &host.arm());
    b.tick(1_000);
    let out = b.outputs();
    assert!(out.reset_asserted && !out.power_cut);
    assert_eq!(b.coil(reg::COIL_RESET), Some(true));
    assert_eq!(b.coil(reg::COIL_POWER), Some(true));
    b.tick(1_500);
    assert!(!b.outputs().reset_asserted);
}

#[test]
fn a_disarm_frame_stops_watching_but_not_a_running_pulse() {
    let (mut b, mut host) = armed_at(0);
    send(&mut b, 500, &host.disarm());
    assert_eq!(b.state(), State::Disarmed);
    assert_eq!(events(&mut b), [Event::Disarmed]);
    b.tick(10_000);
    assert_eq!(b.counters().triggers, 0);
    // Re-armed, then fired: a disarm sent before the pulse is stale and ignored.
    send(&mut b, 10_000, &host.arm());
    b.tick(11_000);
    send(&mut b, 11_100, &host.disarm());
    assert!(triggered(&b));
    // Disarming from grace works.
    b.tick(11_500);
    assert!(matches!(b.state(), State::Grace { .. }));
    send(&mut b, 11_600, &host.disarm());
    assert_eq!(b.state(), State::Disarmed);
}

#[test]
fn arming_twice_is_a_heartbeat() {
    let (mut b, mut host) = armed_at(0);
    send(&mut b, 800, &host.arm());
    assert_eq!(b.state(), State::Armed { deadline_ms: 1_800 });
    assert!(events(&mut b).is_empty());
}

#[test]
fn frames_under_another_key_count_as_bad_mac_and_do_not_feed() {
    let (mut b, _host) = armed_at(0);
    let mut forger = Host {
        key: OTHER_KEY,
        ..Host::new()
    };
    for t in [200, 400, 600, 800] {
        send(&mut b, t, &forger.heartbeat());
    }
    assert_eq!(b.counters().bad_mac, 4);
    assert_eq!(b.input_register(reg::REG_BAD_MAC), Some(4));
    assert_eq!(b.pattern(), Pattern::LinkBad);
    assert!(events(&mut b)
        .iter()
        .all(|e| *e == Event::Refused(Refusal::Auth)));
    b.tick(1_000);
    assert!(triggered(&b));
}

#[test]
fn line_noise_is_dropped_by_the_crc_and_the_next_frame_still_counts() {
    let (mut b, mut host) = armed_at(0);
    let mut noisy = host.heartbeat();
    noisy[20] ^= 0x04;
    send(&mut b, 100, &noisy);
    send(&mut b, 150, &[0x55, 0x13, 0x00]);
    assert_eq!(b.counters().bad_crc, 2);
    assert_eq!(b.input_register(reg::REG_BAD_CRC), Some(2));
    assert_eq!(b.state(), State::Armed { deadline_ms: 1_000 });
    send(&mut b, 200, &host.heartbeat());
    assert_eq!(b.state(), State::Armed { deadline_ms: 1_200 });
    let refusals = events(&mut b)
        .into_iter()
        .filter(|e| matches!(e, Event::Refused(Refusal::Framing(_))))
        .count();
    assert_eq!(refusals, 2);
}

#[test]
fn authentic_frames_from_elsewhere_or_from_the_past_are_refused() {
    let (mut b, mut host) = armed_at(0);
    let mut peer = Host {
        sender: 3,
        ..Host::new()
    };
    send(&mut b, 100, &peer.arm());
    let mut foreign = Host {
        cluster: CLUSTER + 1,
        ..Host::new()
    };
    send(&mut b, 200, &foreign.heartbeat());
    // The arm frame (sequence 1) recorded and played back.
    send(&mut b, 300, &host.encode(Flags::WATCHDOG_ARM, 1));
    send(
        &mut b,
        400,
        &host.wire(Flags::WATCHDOG_ARM | Flags::WATCHDOG_DISARM),
    );
    let old = Host {
        incarnation: 6,
        ..Host::new()
    };
    send(&mut b, 500, &old.encode(0, 99));
    assert_eq!(b.counters().rejected, 5);
    assert_eq!(b.input_register(reg::REG_REJECTED), Some(5));
    assert_eq!(b.counters().heartbeats, 1);
    let got = events(&mut b);
    assert_eq!(got[0], Event::Refused(Refusal::Sender(3)));
    assert!(matches!(got[1], Event::Refused(Refusal::Invalid(_))));
    assert!(matches!(got[2], Event::Refused(Refusal::Replay(_))));
    assert_eq!(got[3], Event::Refused(Refusal::Command));
    assert!(matches!(got[4], Event::Refused(Refusal::Replay(_))));
    b.tick(1_000);
    assert!(triggered(&b), "none of them fed the watchdog");
}

#[test]
fn a_restarted_agent_with_a_higher_incarnation_is_accepted() {
    let (mut b, mut host) = armed_at(0);
    send(&mut b, 500, &host.heartbeat());
    let mut restarted = Host {
        incarnation: 8,
        ..Host::new()
    };
    send(&mut b, 900, &restarted.arm());
    assert_eq!(b.state(), State::Armed { deadline_ms: 1_900 });
}

#[test]
fn late_heartbeats_show_as_link_bad() {
    let (mut b, mut host) = armed_at(0);
    b.tick(500);
    assert_eq!(b.pattern(), Pattern::Armed);
    b.tick(501);
    assert_eq!(b.pattern(), Pattern::LinkBad, "more than half the timeout");
    send(&mut b, 600, &host.heartbeat());
    assert_eq!(b.pattern(), Pattern::Armed);
}

#[test]
fn a_peer_fence_holds_the_relay_open_and_the_watchdog_waits() {
    let (mut b, mut host) = armed_at(0);
    let off = request(&[UNIT, 0x05, 0, 0, 0, 0]);
    assert_eq!(modbus(&mut b, 100, &off), Some(off.clone()), "echo");
    assert_eq!(b.state(), State::Fenced { armed: true });
    assert!(b.outputs().power_cut);
    assert_eq!(b.pattern(), Pattern::Fenced);
    assert_eq!(events(&mut b), [Event::Fenced]);
    // No heartbeats for a long time: the watchdog does nothing behind the fence.
    b.tick(60_000);
    assert_eq!(b.state(), State::Fenced { armed: true });
    assert!(b.outputs().power_cut);
    assert_eq!(b.counters().triggers, 0);
    // Heartbeats and arm frames while fenced are counted but move nothing.
    send(&mut b, 60_100, &host.heartbeat());
    assert_eq!(b.state(), State::Fenced { armed: true });
    let on = request(&[UNIT, 0x05, 0, 0, 0xFF, 0]);
    assert_eq!(modbus(&mut b, 61_000, &on), Some(on.clone()));
    assert_eq!(b.state(), State::Grace { until_ms: 64_000 });
    assert!(!b.outputs().power_cut);
    assert_eq!(events(&mut b), [Event::Unfenced { armed: true }]);
    assert_eq!(b.input_register(reg::REG_FENCE_WRITES), Some(2));
    // Writing the level it already has is not a change.
    modbus(&mut b, 61_100, &on);
    assert_eq!(b.counters().fence_writes, 2);
}

#[test]
fn a_fence_during_a_power_cycle_takes_over_the_relay() {
    let (mut b, _host) = armed_at(0);
    b.tick(1_000);
    assert!(triggered(&b));
    modbus(&mut b, 1_100, &request(&[UNIT, 0x05, 0, 0, 0, 0]));
    assert_eq!(b.state(), State::Fenced { armed: true });
    b.tick(1_500);
    assert!(
        b.outputs().power_cut,
        "the pulse's end does not reclose a fenced host"
    );
    modbus(&mut b, 5_000, &request(&[UNIT, 0x05, 0, 0, 0xFF, 0]));
    assert_eq!(b.state(), State::Grace { until_ms: 8_000 });
}

#[test]
fn a_fence_lifted_from_a_disarmed_bridge_leaves_it_disarmed_and_disarm_while_fenced_sticks() {
    let mut b = bridge();
    modbus(&mut b, 0, &request(&[UNIT, 0x05, 0, 1, 0xFF, 0]));
    assert_eq!(b.state(), State::Fenced { armed: false });
    assert!(b.outputs().reset_asserted);
    assert!(!b.outputs().power_cut);
    let mut host = Host::new();
    send(&mut b, 100, &host.arm());
    assert_eq!(b.state(), State::Fenced { armed: true });
    send(&mut b, 200, &host.disarm());
    assert_eq!(b.state(), State::Fenced { armed: false });
    modbus(&mut b, 300, &request(&[UNIT, 0x05, 0, 1, 0, 0]));
    assert_eq!(b.state(), State::Disarmed);
    assert_eq!(
        events(&mut b),
        [Event::Fenced, Event::Unfenced { armed: false }]
    );
}

#[test]
fn coils_read_back_what_the_relays_do() {
    let (mut b, _host) = armed_at(0);
    let read = request(&[UNIT, 0x01, 0, 0, 0, 2]);
    assert_eq!(
        modbus(&mut b, 10, &read),
        Some(request(&[UNIT, 0x01, 1, 0b01]))
    );
    b.tick(1_000);
    // The watchdog's power cycle reads as power off.
    assert_eq!(
        modbus(&mut b, 1_010, &read),
        Some(request(&[UNIT, 0x01, 1, 0b00]))
    );
    // Both coils at once: power off, reset on.
    let write = request(&[UNIT, 0x0F, 0, 0, 0, 2, 1, 0b10]);
    assert_eq!(
        modbus(&mut b, 1_100, &write),
        Some(request(&[UNIT, 0x0F, 0, 0, 0, 2]))
    );
    assert_eq!(
        modbus(&mut b, 1_200, &read),
        Some(request(&[UNIT, 0x01, 1, 0b10]))
    );
    assert_eq!(b.state(), State::Fenced { armed: true });
}

#[test]
fn input_registers_report_state_reason_and_counters() {
    let (mut b, mut host) = armed_at(0);
    send(&mut b, 300, &host.heartbeat());
    let all = request(&[UNIT, 0x04, 0, 0, 0, 12]);
    let reply = modbus(&mut b, 1_200, &all).expect("answer");
    assert_eq!(&reply[..3], &[UNIT, 0x04, 24]);
    let words: Vec<u16> = reply[3..27]
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]))
        .collect();
    // armed, never fired, 0 triggers, 0 writes, 2 heartbeats, no errors, 1 request so far
    // (this one is answered before it counts), 0 s since the last heartbeat, 0 s to go.
    assert_eq!(words, [2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    let reply = modbus(&mut b, 1_200, &request(&[UNIT, 0x04, 0, 10, 0, 2])).expect("answer");
    assert_eq!(&reply[3..7], &[0, 0, 0, 0]);
    let fresh = bridge();
    assert_eq!(
        fresh.input_register(reg::REG_SECONDS_SINCE_HEARTBEAT),
        Some(0xFFFF)
    );
    assert_eq!(
        fresh.input_register(reg::REG_SECONDS_TO_TRIGGER),
        Some(0xFFFF)
    );
    assert_eq!(fresh.input_register(reg::REGISTER_COUNT), None);
}

#[test]
fn seconds_to_trigger_counts_down() {
    let mut b = Bridge::new(Config {
        timeout_ms: 10_000,
        ..config()
    })
    .expect("valid");
    send(&mut b, 0, &Host::new().arm());
    b.tick(2_500);
    assert_eq!(b.input_register(reg::REG_SECONDS_TO_TRIGGER), Some(7));
    assert_eq!(b.input_register(reg::REG_SECONDS_SINCE_HEARTBEAT), Some(2));
}

#[test]
fn modbus_exceptions_for_unknown_functions_and_addresses() {
    let mut b = bridge();
    let exc = |f: u8, code: u8| Some(request(&[UNIT, f | 0x80, code]));
    // Read holding registers: not supported.
    assert_eq!(
        modbus(&mut b, 0, &request(&[UNIT, 0x03, 0, 0, 0, 1])),
        exc(0x03, 1)
    );
    // Coil 2 does not exist, nor do coils 1..3, nor register 12.
    assert_eq!(
        modbus(&mut b, 10, &request(&[UNIT, 0x05, 0, 2, 0xFF, 0])),
        exc(0x05, 2)
    );
    assert_eq!(
        modbus(&mut b, 20, &request(&[UNIT, 0x01, 0, 1, 0, 2])),
        exc(0x01, 2)
    );
    assert_eq!(
        modbus(&mut b, 30, &request(&[UNIT, 0x04, 0, 11, 0, 2])),
        exc(0x04, 2)
    );
    assert_eq!(
        modbus(&mut b, 40, &request(&[UNIT, 0x04, 0xFF, 0xFF, 0, 2])),
        exc(0x04, 2)
    );
    assert_eq!(
        modbus(&mut b, 50, &request(&[UNIT, 0x0F, 0, 1, 0, 2, 1, 3])),
        exc(0x0F, 2)
    );
    // A bad coil value.
    assert_eq!(
        modbus(&mut b, 60, &request(&[UNIT, 0x05, 0, 0, 0x00, 0x01])),
        exc(0x05, 3)
    );
    // An unknown function of unknown length is answered once the line falls silent.
    assert_eq!(
        modbus(&mut b, 70, &request(&[UNIT, 0x2B, 0x0E, 1, 0])),
        None
    );
    b.tick(73);
    assert_eq!(b.poll_reply(), None);
    b.tick(74);
    assert_eq!(b.poll_reply().map(|a| a.to_vec()), exc(0x2B, 1));
    assert_eq!(b.counters().modbus_exceptions, 8);
    assert_eq!(b.input_register(reg::REG_MODBUS_EXCEPTIONS), Some(8));
    // None of it moved a relay.
    assert_eq!(b.counters().fence_writes, 0);
    assert!(!b.outputs().power_cut);
}

#[test]
fn garbled_foreign_and_broadcast_requests_get_no_answer() {
    let mut b = bridge();
    let mut bad = request(&[UNIT, 0x05, 0, 0, 0, 0]);
    bad[4] = 0xFF;
    assert_eq!(modbus(&mut b, 0, &bad), None);
    assert_eq!(b.counters().modbus_garbled, 1);
    assert_eq!(b.input_register(reg::REG_MODBUS_GARBLED), Some(1));
    assert!(!b.outputs().power_cut, "a garbled write switches nothing");
    assert_eq!(
        modbus(&mut b, 10, &request(&[UNIT + 1, 0x05, 0, 0, 0, 0])),
        None
    );
    assert!(
        !b.outputs().power_cut,
        "another unit's write switches nothing"
    );
    // A broadcast write is executed, silently.
    assert_eq!(modbus(&mut b, 20, &request(&[0, 0x05, 0, 0, 0, 0])), None);
    assert!(b.outputs().power_cut);
    // A broadcast exception is silent too.
    assert_eq!(modbus(&mut b, 30, &request(&[0, 0x03, 0, 0, 0, 1])), None);
    assert_eq!(b.counters().modbus_exceptions, 1);
}

#[test]
fn next_deadline_names_the_earliest_timer() {
    let (mut b, _host) = armed_at(0);
    // Armed: steady LED, so the heartbeat deadline is next.
    assert_eq!(b.next_deadline(), Some(1_000));
    b.tick(1_000);
    // Triggered: the LED blinks every 100 ms, before the pulse ends at 1 500.
    assert_eq!(b.next_deadline(), Some(1_100));
    for _ in 0..5 {
        let next = b.next_deadline().expect("a timer");
        b.tick(next);
    }
    assert!(matches!(b.state(), State::Grace { .. }));
}

#[test]
fn a_clock_stepping_back_never_moves_a_timer_back() {
    let (mut b, mut host) = armed_at(1_000);
    b.tick(1_500);
    send(&mut b, 200, &host.heartbeat());
    // Fed at the highest time seen, not at 200.
    assert_eq!(b.state(), State::Armed { deadline_ms: 2_500 });
}

#[test]
fn the_event_queue_drops_the_oldest_when_nobody_drains_it() {
    let mut b = bridge();
    for t in 0..40 {
        send(&mut b, t, &[0x01, 0x00]);
    }
    assert_eq!(b.counters().bad_crc, 40);
    assert_eq!(b.counters().events_dropped, 40 - 16);
    assert_eq!(events(&mut b).len(), 16);
}

#[test]
fn the_whole_state_fits_a_small_microcontroller() {
    // The replay window (one per possible sender and link, as proto keeps it) dominates; the
    // rest is the two frame buffers. 8 KiB leaves room on a 16 KiB part.
    let size = std::mem::size_of::<Bridge<'static>>();
    assert!(size <= 8 * 1024, "{size} bytes");
    eprintln!("Bridge state: {size} bytes");
}
