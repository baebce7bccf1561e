"""The "Train GAN" widget: a form over :class:`~napari_medgan.config.RunConfig` and the
same :class:`~napari_medgan.training.trainer.Trainer` the CLI uses, run in a child process
(:class:`~napari_medgan.training.process.TrainingProcess`) whose events a napari
``thread_worker`` passes on. Events are turned into plot points, a preview layer updated
in place, notifications and the remembered checkpoint -- all on the main thread."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_medgan._widgets._common import (
    PathPicker,
    combo,
    expected_errors,
    follow_session,
    lr_spin,
    report_error,
    scrolling_body,
    session_for,
    spin,
)
from napari_medgan._widgets._plot import LossPlot
from napari_medgan._widgets._preview import (
    STAGGER_MS,
    Turns,
    add_placeholders,
    remove_placeholders,
    show_preview,
)
from napari_medgan._widgets._remember import remember
from napari_medgan._widgets._run import (
    TrainingRun,
    TrainWorker,
    drop_frame_locals,
    shutdown_on_destroy,
    training_threads,
)
from napari_medgan.config import (
    LOSSES,
    MODEL_TASKS,
    PRECISIONS,
    SWITCHES,
    ModelConfig,
    RunConfig,
    TrainConfig,
    field_help,
)
from napari_medgan.training.console import RemainingTime, format_duration

START_FROM = ("scratch", "fine-tune from checkpoint", "resume run folder")
START_TIP = "Start training with these settings"
PAUSE_TIP = "Hold the run between two steps; click again to go on"
STOP_TIP = "End the run after the current step, with a final checkpoint"


class TrainWidget(QWidget):
    """Configure, start, pause and stop a training run; plot losses, preview samples."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer, self.session = napari_viewer, session_for(napari_viewer)
        self.run: TrainingRun | None = None
        self.checkpoint: str | None = None
        self._fit_view = False
        self._preview_turns = Turns(self)  # preview work, one piece per event-loop turn
        self._live: dict[str, TrainingRun] = {}  # for the destroyed hook, which can't hold self
        self.destroyed.connect(partial(shutdown_on_destroy, self._live))
        form = QFormLayout()
        self.model = combo(MODEL_TASKS, self._on_model_changed)
        self.task = combo((), self._on_task_changed)
        self.loss = combo(LOSSES)
        t, m = TrainConfig(), ModelConfig()  # the defaults are the config's, declared once
        self.steps, self.batch = spin(1, 10**7, t.steps), spin(1, 1024, t.batch_size)
        self.channels = spin(4, 1024, m.channels)
        # whole-volume families (hagan3d): the volume they generate and the slab per step
        self.volume = QLineEdit()
        self.volume.setPlaceholderText("auto: the dataset's patch size, cubed")
        self.slab = spin(8, 4096, m.slab_size)
        self.slab.setSingleStep(8)
        # twostage3d: stage 1's label map on a grid 1/n of the patch side
        self.label_scale = spin(1, 2, m.label_scale)
        self.preview_every = spin(1, 10**6, t.preview_every)
        self.lr_g, self.lr_d = lr_spin(t.lr_g), lr_spin(t.lr_d)
        self.seed = spin(0, 2**31 - 1, t.seed)
        self.device, self.precision = combo(_devices(), self._on_device_changed), combo(PRECISIONS)
        self.device_info = QLabel()
        self.device_info.setToolTip(
            "The run trains in a process of its own at the lowest priority: napari (and "
            "anything else you run) first, training on the time that is left. "
            "`napari-medgan train` trains at normal priority.")
        self.memory_check = combo(SWITCHES[1:])
        self.memory_check.setCurrentText(t.memory_check)
        self.out = PathPicker("dir", "auto: ~/napari-medgan-runs/<model>-<time>")
        self.start_from = combo(START_FROM)
        self.init_path = PathPicker("file_or_dir", "checkpoint or run folder")
        self.data_info = QLabel()
        fields = {self.model: "model.name", self.task: "model.task", self.loss: "train.loss",
                  self.steps: "train.steps", self.batch: "train.batch_size",
                  self.channels: "model.channels", self.lr_g: "train.lr_g",
                  self.lr_d: "train.lr_d", self.device: "train.device",
                  self.precision: "train.precision", self.seed: "train.seed",
                  self.preview_every: "train.preview_every",
                  self.volume: "model.volume_shape", self.slab: "model.slab_size",
                  self.label_scale: "model.label_scale",
                  self.memory_check: "train.memory_check"}
        for w, key in fields.items():
            w.setToolTip(field_help(*key.split(".")))  # the CLI's --help text, declared once
        self.out.setToolTip(field_help("run", "out") + "; empty: a new folder under "
                            "~/napari-medgan-runs")
        self.start_from.setToolTip(f"scratch: a new run; fine-tune: {field_help('run', 'init')}; "
                                   f"resume: {field_help('run', 'resume')}")
        self.init_path.setToolTip("the checkpoint, run folder or model bundle to fine-tune "
                                  "from, or the run folder to resume")
        for name, w in [("Data", self.data_info), ("Model", self.model), ("Task", self.task),
                        ("Loss", self.loss), ("Steps", self.steps), ("Batch size", self.batch),
                        ("Width (channels)", self.channels),
                        ("Volume (x,y,z)", self.volume), ("Slab (z voxels)", self.slab),
                        ("Label grid (1/n)", self.label_scale),
                        ("lr G", self.lr_g),
                        ("lr D", self.lr_d), ("Device", self.device), ("", self.device_info),
                        ("Precision", self.precision), ("Memory check", self.memory_check),
                        ("Seed", self.seed),
                        ("Preview every", self.preview_every), ("Run folder", self.out),
                        ("Start from", self.start_from), ("Checkpoint", self.init_path)]:
            form.addRow(name, w)
        self.start_btn, self.pause_btn, self.stop_btn = (QPushButton(t) for t in
                                                         ("Start", "Pause", "Stop"))
        self.start_btn.clicked.connect(self._on_start)
        self.pause_btn.clicked.connect(self._on_pause)
        self.stop_btn.clicked.connect(self._on_stop)
        buttons = QHBoxLayout()
        for b in (self.start_btn, self.pause_btn, self.stop_btn):
            buttons.addWidget(b)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        # the run's progress in the dock, not napari's activity dock: adding a bar there
        # lays out and repaints the whole window as the run sets up (a 40-80 ms stall)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self._step_text, self._step_shown = "", 0.0  # the latest step line, when last shown
        self._step_value = 0  # the latest step, for the progress bar
        self._step_timer = QTimer(self)
        self._step_timer.setSingleShot(True)
        self._step_timer.timeout.connect(self._show_step)
        self._progress = ""  # the latest periodic figure (validation), shown under the step
        self._losses = ""  # the last losses read (the trainer reads them at log intervals)
        self._eta = RemainingTime()
        from napari.utils.theme import get_theme

        theme = get_theme(self.viewer.theme)
        self.plot = LossPlot(background=theme.background.as_hex(),
                             foreground=theme.text.as_hex())
        layout = QVBoxLayout(scrolling_body(self))
        for part in (form, buttons):
            layout.addLayout(part)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addStretch(1)
        self.init_path.edit.editingFinished.connect(self._on_run_folder_chosen)
        self.start_from.currentIndexChanged.connect(self._on_run_folder_chosen)
        self.model.setCurrentText(self.session.model_name)
        self._on_model_changed()
        self._on_device_changed()
        remember(self, "Train GAN", {  # the model before its task: it lists the tasks
            "model": self.model, "task": self.task, "loss": self.loss, "steps": self.steps,
            "batch_size": self.batch, "channels": self.channels, "volume_shape": self.volume,
            "slab_size": self.slab, "label_scale": self.label_scale, "lr_g": self.lr_g,
            "lr_d": self.lr_d, "device": self.device,
            "precision": self.precision, "memory_check": self.memory_check, "seed": self.seed,
            "preview_every": self.preview_every})
        follow_session(self, self._on_session_changed)
        self._on_session_changed("dataset")
        self._set_running(False)

    # ----------------------------------------------------------------- config
    def build_run(self) -> RunConfig:
        """The RunConfig the form describes (the dataset part comes from the session)."""
        whole = self.volume.isEnabled()
        run = RunConfig(model=ModelConfig(
            name=self.model.currentText(), task=self.task.currentText(),
            channels=self.channels.value(), slab_size=self.slab.value(),
            volume_shape=(self.volume.text().strip() or None) if whole else None,
            label_scale=self.label_scale.value() if self.label_scale.isEnabled() else 1))
        t = run.train
        t.loss, t.steps = self.loss.currentText(), self.steps.value()
        t.batch_size = self.batch.value()
        t.lr_g, t.lr_d, t.seed = self.lr_g.value(), self.lr_d.value(), self.seed.value()
        t.device, t.precision = self.device.currentText(), self.precision.currentText()
        t.memory_check = self.memory_check.currentText()
        t.preview_every, t.preview_count = self.preview_every.value(), 1
        t.checkpoint_every = max(t.checkpoint_every, t.preview_every)
        start, path = self.start_from.currentIndex(), self.init_path.path()
        if start and not path:
            raise ValueError(f"{START_FROM[start]}: choose a checkpoint or run folder")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        default = Path.home() / "napari-medgan-runs" / f"{run.model.name}-{stamp}"
        run.out = path if start == 2 else (self.out.path() or str(default))
        run.init, run.resume = (path if start == 1 else None), start == 2
        return run  # every field was checked as it was set

    # --------------------------------------------------------------- handlers
    def _on_start(self) -> None:
        if self.run is not None:
            return
        from napari.qt.threading import thread_worker

        from napari_medgan.training.process import TrainingProcess
        from napari_medgan.training.trainer import refuse_used_folder

        try:
            run = self.build_run()
            if not run.resume:  # never write a second run into a run's folder
                refuse_used_folder(run.out)
            volumes = self.session.dataset.apply(run, self.viewer)  # checked as it sets
        except expected_errors() as exc:
            self._say(report_error("Train GAN", exc))
            return
        self.out.edit.setText(run.out)
        process = TrainingProcess(run, *volumes, threads=training_threads(run.train.device),
                                  handover=True)
        self.run = TrainingRun(process, run.train.steps)
        make = thread_worker(self.run.events, worker_class=TrainWorker, start_thread=False,
                             connect={"errored": self._on_error})
        worker = self.run.worker = make()
        worker.handle = self.run
        worker.yielded.connect(self._on_event)
        worker.finished.connect(self._on_finished)
        self.run.slots = [(worker.yielded, self._on_event), (worker.finished, self._on_finished),
                          (worker.errored, self._on_error)]
        self._live["run"] = self.run
        self._fit_view = add_placeholders(self.viewer, run.model)
        self.plot.clear()
        if run.resume:  # the curve so far, up to the checkpoint the run goes on from
            from napari_medgan.training.checkpoint import checkpoint_step

            self.show_record(run.out, until=checkpoint_step(run.out) or 0)
        self._progress, self._losses, self._eta = "", "", RemainingTime()
        self._step_value = 0
        self.progress.setRange(0, run.train.steps)
        self.progress.setValue(0)
        self.progress.setFormat("step %v / %m")
        self.progress.setVisible(True)
        self._say(f"starting: {run.model.name}/{run.model.task} -> {run.out}\n"
                  "(the training process imports torch and builds the data first)")
        self._set_running(True)
        worker.start()

    def show_record(self, folder: str, until: int | None = None) -> dict | None:
        """Draw a run folder's loss curve from its training record (``history.jsonl``) and
        say where it stands; returns the record's summary, None when it has none."""
        from napari_medgan.run_report import summary
        from napari_medgan.training.history import read_history

        records = [r for r in read_history(folder) if until is None or r["step"] <= until]
        if not records:
            return None
        self.plot.clear()
        for r in records:
            if r["kind"] == "step":
                self.plot.add(r["step"], {k: v for k, v in r["losses"].items() if v is not None})
        self.plot.redraw()
        return summary(records)

    def _on_run_folder_chosen(self, *_) -> None:
        """Choosing a run folder to resume shows its curve and where it stopped."""
        if self.run is not None or self.start_from.currentIndex() != 2:
            return
        folder = self.init_path.path()
        figures = self.show_record(folder) if folder else None
        if figures:
            self._say(f"{folder}: {figures['model']} at step {figures['steps']} "
                      f"({figures['ended']}, {format_duration(figures['training_seconds'])}"
                      " of training)")

    def _on_pause(self) -> None:
        if self.run is None:
            return
        trainer = self.run.trainer
        trainer.resume() if trainer.paused else trainer.pause()
        self._show_paused(trainer.paused)
        self._say(self._paused_line() if trainer.paused else "resumed")

    def _show_paused(self, paused: bool) -> None:
        """Say "paused" where one looks: the button, the status line (bold, and kept there
        as a step still in flight arrives) and the progress bar."""
        self.pause_btn.setText("Resume" if paused else "Pause")
        self.status.setStyleSheet("font-weight: bold" if paused else "")
        self.progress.setFormat("paused at step %v / %m" if paused else "step %v / %m")

    def _paused_line(self) -> str:
        return f"PAUSED at step {self.run.trainer.step}: click Resume to go on"

    def _on_stop(self) -> None:
        if self.run is not None:
            self.run.trainer.stop()
            self._show_paused(False)  # a paused run is woken to stop
            self._say("stopping: finishing the step and writing a checkpoint...")

    def _say(self, text: str) -> None:
        """Show ``text`` now, dropping a step line still waiting to be shown."""
        self._step_timer.stop()
        self._step_text = ""
        self.status.setText(text)

    def _say_step(self, text: str) -> None:
        """Show the step line, at most four times a second: each new text lays the dock out
        again (about 6 ms of the main thread), and a GPU run makes dozens of steps a second."""
        self._step_text = text
        wait = self._step_shown + 0.25 - time.perf_counter()
        if wait <= 0:
            self._show_step()
        elif not self._step_timer.isActive():
            self._step_timer.start(int(wait * 1000) + 1)

    def _show_step(self) -> None:
        # QProgressBar.setValue repaints at once (a synchronous paint of the dock, which
        # then waits for the GIL): once per shown line, not once per step
        self.progress.setValue(self._step_value)
        if not self._step_text:
            return
        paused = self.run is not None and self.run.trainer is not None and \
            self.run.trainer.paused
        self.status.setText(f"{self._paused_line()}\n{self._step_text}" if paused
                            else self._step_text)
        self._step_shown = time.perf_counter()

    def _on_event(self, event) -> None:
        from napari.utils.notifications import show_info, show_warning

        from napari_medgan.training import events as ev

        if isinstance(event, ev.StepEvent):
            self.plot.add(event.step, event.losses)
            self._step_value = event.step
            if event.losses:  # read at log intervals; between them the last read stays
                self._losses = "  ".join(f"{k} {v:.3g}" for k, v in event.losses.items()
                                         if k != "R1")
            losses = self._losses
            left = self._eta.update(event.step, event.total, time.perf_counter())
            eta = f", about {format_duration(left)} left" if left is not None else ""
            self._say_step(f"step {event.step}/{event.total}  {losses}  "
                           f"({event.seconds:.2f} s/step{eta})"
                           + (f"\n{self._progress}" if self._progress else ""))
        elif isinstance(event, ev.PreviewEvent) and event.volumes:
            show_preview(self.viewer, event, self._fit_view, self._preview_turns,
                         then=self._drawn)
            self._fit_view = False
        elif isinstance(event, ev.CheckpointEvent) and event.kind != "best":
            self.checkpoint = event.path
        elif isinstance(event, ev.MessageEvent) and event.level == "progress":
            self._progress = event.text
        elif isinstance(event, ev.MessageEvent):
            (show_warning if event.level == "warning" else show_info)(event.text)
            QTimer.singleShot(STAGGER_MS, self._drawn)  # a turn of the event loop from now
        elif isinstance(event, ev.DoneEvent):
            # the final checkpoint (DoneEvent.checkpoint may name the "best" alias)
            self.checkpoint = self.checkpoint or event.checkpoint
            self.session.run_dir = str(self.run.trainer.out)
            self.session.checkpoint = self.checkpoint
            self._say(f"{event.reason} at step {event.step}; checkpoint {self.checkpoint}")
            self.session.changed.emit("run")

    def _drawn(self) -> None:
        """The viewer has drawn what the run sent: it may have the cores back."""
        if self.run is not None:  # released only once the dock has let go of it
            self.run.trainer.drawn()

    def _on_error(self, exc: BaseException) -> None:
        self._say(report_error("Training failed", exc))
        drop_frame_locals(exc)  # they hold the trainer, and the notification keeps exc

    def _on_finished(self) -> None:
        run, self.run = self.run, None
        self._live.pop("run", None)
        if run is not None:
            run.release()  # the run's memory went back with its process
        self._preview_turns.flush()  # the last preview, if it is not all in yet
        remove_placeholders(self.viewer)  # those that never got a preview (error, early stop)
        self.plot.redraw()
        self.progress.setValue(self._step_value)  # the last step, however the run ended
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.pause_btn.setEnabled(running)
        self.stop_btn.setEnabled(running)
        self.pause_btn.setText("Pause")
        self.status.setStyleSheet("")
        idle = "" if running else " (no run in progress)"
        self.pause_btn.setToolTip(PAUSE_TIP + idle)
        self.stop_btn.setToolTip(STOP_TIP + idle)
        self.start_btn.setToolTip(START_TIP if not running else
                                  f"{START_TIP} (a run is in progress: stop it first)")

    def _on_model_changed(self, *_) -> None:
        from napari_medgan.models import get_model

        whole = hasattr(get_model(self.model.currentText()), "patch_shape")
        for w in (self.volume, self.slab):
            w.setEnabled(whole)
        self.label_scale.setEnabled(self.model.currentText() == "twostage3d")
        self.task.clear()
        self.task.addItems(MODEL_TASKS[self.model.currentText()])
        if self.session.task in MODEL_TASKS[self.model.currentText()]:
            self.task.setCurrentText(self.session.task)
        self._on_task_changed()

    def _on_task_changed(self, *_) -> None:
        name, task = self.model.currentText(), self.task.currentText()
        if task and (name, task) != (self.session.model_name, self.session.task):
            self.session.model_name, self.session.task = name, task
            self.session.changed.emit("model")

    def _on_device_changed(self, *_) -> None:
        from napari_medgan._widgets._run import cpu_training_threads, usable_cores
        from napari_medgan.training.device import describe_device, resolve_device

        try:
            device = resolve_device(self.device.currentText())
        except ValueError as exc:
            self.device_info.setText(str(exc))
            return
        self.device_info.setText(
            describe_device(device) if device.type != "cpu" else
            f"CPU: {cpu_training_threads()} training thread(s) on {usable_cores()} core(s)")

    def _on_session_changed(self, what: str) -> None:
        if what == "dataset":
            d = self.session.dataset
            self.data_info.setText(f"{d.summary()}, patch {d.patch_size}^3")


def _devices() -> list[str]:
    import torch

    return ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
