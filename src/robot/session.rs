//! The session state machine: the host's picture of the robot, rebuilt from every frame that
//! is not an answer to a command. No I/O and no clock of its own (the caller passes the time),
//! so every rule below is tested frame by frame.
//!
//! It answers four questions the link asks while it waits:
//!
//! - **Is the robot ready?** Only a Ready frame, or a heartbeat saying Ready, that arrived
//!   *after the answer to the host's last command* counts: the firmware answers a command
//!   before any frame the command causes (SPEC §7.3) and the line keeps order, so anything
//!   earlier describes the robot before that command.
//! - **Which frames belong to the episode in flight?** An episode is watched from the moment
//!   StartEpisode is sent, which the host does only after a fresh proof of Ready: every frame
//!   of an earlier episode, an earlier session or an earlier boot arrived before that proof,
//!   so a Step, SafetyTrip or EpisodeEnd is the episode's only if its (trial, episode) match
//!   and it arrives while the episode is watched. Everything else is stale and dropped.
//! - **Did the episode end without its EpisodeEnd?** Once the episode has visibly started
//!   (its Ack or a Step arrived), a heartbeat whose state is not Running, or a Ready, means it
//!   is over and its end was lost.
//! - **Did the robot reboot?** Its uptime went backwards (wrapping arithmetic), or it says Idle
//!   although a parameter set was applied since the handshake.
//!
//! Steps of the watched episode are delivered once each, in order of `Step.step`: a repeat is
//! dropped, a jump reports the missing steps.

use std::time::Instant;

use firmware_protocol::{EpisodeStatus, RobotMsg, RobotState, Step, TripReason};

/// What a frame told the session, for the link to act on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Noticed {
    /// A new step of the watched episode (never a repeat).
    Step(Step),
    /// Steps `from..to` of the watched episode never arrived (lost or corrupted frames).
    StepsMissed {
        /// First missing step index.
        from: u32,
        /// One past the last missing step index.
        to: u32,
    },
    /// The watched episode's EpisodeEnd; the episode is no longer watched.
    End {
        /// Sum of rewards, as the firmware reports it.
        episode_return: f32,
        /// Step frames the firmware sent.
        steps: u32,
        /// How it ended.
        status: EpisodeStatus,
    },
    /// A firmware safety trip during the watched episode.
    Trip {
        /// Step index of the trip.
        step: u32,
        /// Which limit.
        reason: TripReason,
        /// The value that tripped it.
        value: f32,
    },
    /// The watched episode is over (the robot says `state`) but its EpisodeEnd was lost.
    EndMissing {
        /// The state that gave it away.
        state: RobotState,
    },
    /// The robot rebooted; `why` says what showed it.
    Reboot {
        /// What showed it.
        why: &'static str,
    },
    /// The robot broke the protocol within the watched episode.
    Lie {
        /// What it said.
        what: LieKind,
    },
}

/// A protocol violation the session can see on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LieKind {
    /// A Step index at or past the episode's `max_steps`.
    StepPastMaxSteps {
        /// The index received.
        step: u32,
        /// The episode's max_steps.
        max_steps: u32,
    },
}

/// A latch the robot reported outside any watched episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latch {
    /// A SafetyTrip with its reason and value.
    Trip {
        /// Which limit.
        reason: TripReason,
        /// The value that tripped it.
        value: f32,
    },
    /// A heartbeat said Stopped; the cause is unknown.
    Stopped,
}

/// The episode being watched.
#[derive(Debug, Clone, Copy)]
struct Watch {
    trial: u32,
    episode: u16,
    max_steps: u32,
    /// Its Ack or one of its Steps arrived.
    started: bool,
    next_step: u32,
    last_progress: Instant,
    over: bool,
}

/// The host's picture of one robot (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct Session {
    last_uptime: Option<u32>,
    params_applied: bool,
    ready: bool,
    latch: Option<Latch>,
    /// The last latch seen outside an episode, kept across answers (a Nack EStopLatched
    /// needs its cause) until the latch is released.
    last_latch: Option<Latch>,
    watch: Option<Watch>,
    stale: u64,
    duplicates: u64,
}

impl Session {
    /// A session that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The host received the answer to its last command: what came before it is history.
    pub fn answer_received(&mut self) {
        self.ready = false;
        self.latch = None;
    }

    /// A SetParams was accepted: from now on Idle means the robot lost it (a reboot).
    pub fn params_applied(&mut self) {
        self.params_applied = true;
    }

    /// Whether a SetParams was accepted since the handshake (or the last reboot).
    pub fn has_params(&self) -> bool {
        self.params_applied
    }

    /// A new boot (or a new session): forget everything about the previous one.
    pub fn restart(&mut self) {
        *self = Session {
            stale: self.stale,
            duplicates: self.duplicates,
            ..Session::default()
        };
    }

    /// Whether a fresh Ready (after the last answer) has been seen.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// A latch reported after the last answer, outside any watched episode.
    pub fn latch(&self) -> Option<Latch> {
        self.latch
    }

    /// The last latch reported outside an episode since the last release.
    pub fn last_latch(&self) -> Option<Latch> {
        self.last_latch
    }

    /// The latch was released (ClearEStop acknowledged).
    pub fn released(&mut self) {
        self.latch = None;
        self.last_latch = None;
    }

    /// Frames dropped as belonging to no watched episode.
    pub fn stale_frames(&self) -> u64 {
        self.stale
    }

    /// Step frames dropped as repeats.
    pub fn duplicate_steps(&self) -> u64 {
        self.duplicates
    }

    /// Starts watching episode (`trial`, `episode`); call just before sending its
    /// StartEpisode.
    pub fn watch(&mut self, trial: u32, episode: u16, max_steps: u32, now: Instant) {
        self.ready = false;
        self.watch = Some(Watch {
            trial,
            episode,
            max_steps,
            started: false,
            next_step: 0,
            last_progress: now,
            over: false,
        });
    }

    /// The watched episode's StartEpisode was acknowledged.
    pub fn started(&mut self, now: Instant) {
        if let Some(w) = &mut self.watch {
            w.started = true;
            w.last_progress = now;
        }
    }

    /// Stops watching (the episode ended, was recovered, or is given up).
    pub fn unwatch(&mut self) {
        self.watch = None;
    }

    /// The watched episode, as (trial, episode, next expected step), if any.
    pub fn watched(&self) -> Option<(u32, u16, u32)> {
        self.watch.map(|w| (w.trial, w.episode, w.next_step))
    }

    /// When the watched episode last made progress (its Ack or a new Step).
    pub fn last_progress(&self) -> Option<Instant> {
        self.watch.map(|w| w.last_progress)
    }

    /// Takes in one frame that is not an answer to a command; returns what it showed, in
    /// order (a gap comes before the step after it).
    pub fn on_frame(&mut self, msg: &RobotMsg, now: Instant) -> Vec<Noticed> {
        let mut noticed = Vec::new();
        match *msg {
            RobotMsg::Step(step) => self.on_step(step, now, &mut noticed),
            _ => noticed.extend(self.on_other(msg)),
        }
        noticed
    }

    fn on_other(&mut self, msg: &RobotMsg) -> Option<Noticed> {
        match *msg {
            RobotMsg::Heartbeat { uptime_ms, state } => self.on_heartbeat(uptime_ms, state),
            RobotMsg::Ready => self.on_ready_state(RobotState::Ready),
            RobotMsg::EpisodeEnd {
                trial,
                episode,
                episode_return,
                steps,
                status,
            } => match self.watch {
                Some(w) if (w.trial, w.episode) == (trial, episode) && !w.over => {
                    self.watch = None;
                    Some(Noticed::End {
                        episode_return,
                        steps,
                        status,
                    })
                }
                _ => {
                    self.stale += 1;
                    None
                }
            },
            RobotMsg::SafetyTrip {
                trial,
                episode,
                step,
                reason,
                value,
            } => match self.watch {
                Some(w) if (w.trial, w.episode) == (trial, episode) && !w.over => {
                    Some(Noticed::Trip {
                        step,
                        reason,
                        value,
                    })
                }
                Some(_) => {
                    self.stale += 1;
                    None
                }
                None => {
                    self.latch = Some(Latch::Trip { reason, value });
                    self.last_latch = self.latch;
                    None
                }
            },
            _ => None,
        }
    }

    fn on_heartbeat(&mut self, uptime_ms: u32, state: RobotState) -> Option<Noticed> {
        let previous = self.last_uptime.replace(uptime_ms);
        if let Some(before) = previous {
            if (uptime_ms.wrapping_sub(before) as i32) < 0 {
                return Some(Noticed::Reboot {
                    why: "its uptime went backwards",
                });
            }
        }
        if state == RobotState::Idle && self.params_applied {
            return Some(Noticed::Reboot {
                why: "it reports Idle although a parameter set was applied",
            });
        }
        self.on_ready_state(state)
    }

    fn on_ready_state(&mut self, state: RobotState) -> Option<Noticed> {
        match &mut self.watch {
            Some(w) if w.started && state != RobotState::Running && !w.over => {
                w.over = true;
                Some(Noticed::EndMissing { state })
            }
            Some(_) => None,
            None => {
                match state {
                    RobotState::Ready => self.ready = true,
                    RobotState::Stopped if self.latch.is_none() => {
                        self.latch = Some(Latch::Stopped);
                        self.last_latch.get_or_insert(Latch::Stopped);
                    }
                    _ => {}
                }
                None
            }
        }
    }

    fn on_step(&mut self, step: Step, now: Instant, noticed: &mut Vec<Noticed>) {
        let Some(w) = &mut self.watch else {
            self.stale += 1;
            return;
        };
        if (w.trial, w.episode) != (step.trial, step.episode) || w.over {
            self.stale += 1;
            return;
        }
        w.started = true;
        if step.step < w.next_step {
            self.duplicates += 1;
            return;
        }
        if step.step >= w.max_steps {
            noticed.push(Noticed::Lie {
                what: LieKind::StepPastMaxSteps {
                    step: step.step,
                    max_steps: w.max_steps,
                },
            });
            return;
        }
        if step.step > w.next_step {
            noticed.push(Noticed::StepsMissed {
                from: w.next_step,
                to: step.step,
            });
        }
        w.next_step = step.step + 1;
        w.last_progress = now;
        noticed.push(Noticed::Step(step));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(trial: u32, episode: u16, index: u32) -> RobotMsg {
        RobotMsg::Step(Step {
            timestamp_us: index * 20_000,
            trial,
            episode,
            step: index,
            reward: 0.5,
            roll: 0.0,
            pitch: 0.0,
            body_height: 0.3,
            max_joint_temp: 40.0,
            faults: 0,
        })
    }

    fn hb(uptime_ms: u32, state: RobotState) -> RobotMsg {
        RobotMsg::Heartbeat { uptime_ms, state }
    }

    fn end(trial: u32, episode: u16) -> RobotMsg {
        RobotMsg::EpisodeEnd {
            trial,
            episode,
            episode_return: 2.0,
            steps: 4,
            status: EpisodeStatus::Completed,
        }
    }

    #[test]
    fn only_a_ready_after_the_last_answer_counts() {
        let now = Instant::now();
        let mut s = Session::new();
        s.on_frame(&RobotMsg::Ready, now);
        assert!(s.ready());
        s.answer_received();
        assert!(!s.ready(), "a Ready from before the answer is history");
        s.on_frame(&hb(100, RobotState::Resetting), now);
        assert!(!s.ready());
        s.on_frame(&hb(200, RobotState::Ready), now);
        assert!(
            s.ready(),
            "a heartbeat saying Ready is as good as a Ready frame"
        );
    }

    #[test]
    fn frames_of_other_episodes_are_stale_and_steps_come_once_in_order() {
        let now = Instant::now();
        let mut s = Session::new();
        assert!(
            s.on_frame(&step(5, 0, 0), now).is_empty(),
            "nothing watched"
        );
        assert!(s.on_frame(&end(5, 0), now).is_empty());
        s.watch(5, 1, 10, now);
        assert!(
            s.on_frame(&step(5, 0, 3), now).is_empty(),
            "another episode"
        );
        assert!(s.on_frame(&end(4, 1), now).is_empty(), "another trial");
        assert_eq!(s.stale_frames(), 4);
        assert!(matches!(
            s.on_frame(&step(5, 1, 0), now)[..],
            [Noticed::Step(_)]
        ));
        assert!(s.on_frame(&step(5, 1, 0), now).is_empty(), "a duplicate");
        assert_eq!(s.duplicate_steps(), 1);
        let got = s.on_frame(&step(5, 1, 3), now);
        assert!(
            matches!(got[..], [Noticed::StepsMissed { from: 1, to: 3 }, Noticed::Step(st)] if st.step == 3),
            "{got:?}"
        );
        assert_eq!(s.watched(), Some((5, 1, 4)));
        assert!(
            s.on_frame(&step(5, 1, 2), now).is_empty(),
            "late and repeated"
        );
        assert!(matches!(
            s.on_frame(&step(5, 1, 12), now)[..],
            [Noticed::Lie { .. }]
        ));
        assert!(matches!(
            s.on_frame(&end(5, 1), now)[..],
            [Noticed::End { .. }]
        ));
        assert_eq!(s.watched(), None);
        assert!(
            s.on_frame(&end(5, 1), now).is_empty(),
            "a duplicated end is stale"
        );
    }

    #[test]
    fn a_robot_that_stops_running_without_an_end_lost_it() {
        let now = Instant::now();
        let mut s = Session::new();
        s.watch(2, 0, 100, now);
        // Heartbeats from before StartEpisode was processed say Ready: not yet started.
        assert!(s.on_frame(&hb(100, RobotState::Ready), now).is_empty());
        s.started(now);
        assert!(s.on_frame(&hb(200, RobotState::Running), now).is_empty());
        assert_eq!(
            s.on_frame(&hb(300, RobotState::Resetting), now),
            vec![Noticed::EndMissing {
                state: RobotState::Resetting
            }]
        );
        assert!(
            s.on_frame(&RobotMsg::Ready, now).is_empty(),
            "reported once"
        );
        assert!(s.on_frame(&end(2, 0), now).is_empty(), "too late: given up");
        s.unwatch();
        // A Ready frame is enough too.
        s.watch(2, 1, 100, now);
        s.on_frame(&step(2, 1, 0), now);
        assert_eq!(
            s.on_frame(&RobotMsg::Ready, now),
            vec![Noticed::EndMissing {
                state: RobotState::Ready
            }]
        );
    }

    #[test]
    fn reboots_show_as_uptime_going_back_or_idle_with_parameters_applied() {
        let now = Instant::now();
        let mut s = Session::new();
        assert!(s.on_frame(&hb(5_000, RobotState::Idle), now).is_empty());
        assert!(s.on_frame(&hb(5_100, RobotState::Idle), now).is_empty());
        // Uptime wraps at 2^32 ms: forward across the wrap is not a reboot.
        s.restart();
        s.on_frame(&hb(u32::MAX - 5, RobotState::Idle), now);
        assert!(s.on_frame(&hb(50, RobotState::Idle), now).is_empty());
        assert!(matches!(
            s.on_frame(&hb(10, RobotState::Idle), now)[..],
            [Noticed::Reboot { .. }]
        ));
        s.restart();
        s.params_applied();
        assert!(matches!(
            s.on_frame(&hb(10, RobotState::Idle), now)[..],
            [Noticed::Reboot { .. }]
        ));
    }

    #[test]
    fn a_trip_outside_an_episode_is_a_latch_not_a_verdict() {
        let now = Instant::now();
        let mut s = Session::new();
        let trip = RobotMsg::SafetyTrip {
            trial: 0,
            episode: 0,
            step: 0,
            reason: TripReason::BodyHeight,
            value: 0.04,
        };
        assert!(s.on_frame(&trip, now).is_empty());
        assert!(matches!(s.latch(), Some(Latch::Trip { .. })));
        s.answer_received();
        assert_eq!(s.latch(), None);
        s.on_frame(&hb(10, RobotState::Stopped), now);
        assert_eq!(s.latch(), Some(Latch::Stopped));
        // During a watched episode a matching trip is the episode's.
        s.watch(7, 0, 100, now);
        let trip = RobotMsg::SafetyTrip {
            trial: 7,
            episode: 0,
            step: 12,
            reason: TripReason::Roll,
            value: 0.9,
        };
        assert!(matches!(
            s.on_frame(&trip, now)[..],
            [Noticed::Trip { step: 12, .. }]
        ));
    }
}
