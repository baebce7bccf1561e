"""The one training loop: a GAN trainer whose run is an iterator of events.

The CLI consumes :meth:`Trainer.run` with a progress bar; the napari widget
wraps the same iterator in a ``thread_worker``. The loop yields at least once
per step, so it can be paused, resumed and stopped between steps.

Stabilisers (all on by default, each a config field):
non-saturating loss (Goodfellow et al. 2014), lazy R1 penalty on reals
(Mescheder et al. 2018; Karras et al. 2020), differentiable augmentation of
real and fake alike (Zhao et al. 2020), spectral norm in D (Miyato et al.
2018), TTUR learning rates (Heusel et al. 2017), an EMA generator for sampling,
gradient clipping, and a divergence guard that rolls back to the last good
state with lower learning rates.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_medgan import __version__
from napari_medgan.config import RunConfig
from napari_medgan.io.atomic import (
    DiskFullError,
    atomic_write_text,
    is_disk_full,
    remove_leftovers,
)
from napari_medgan.tasks import TASKS
from napari_medgan.training import events as ev
from napari_medgan.training.device import (
    autocast,
    describe_device,
    keep_host_memory,
    release_memory,
    resolve_device,
    resolve_keep_host_memory,
    resolve_precision,
)
from napari_medgan.training.distributed import (
    all_ranks_agree,
    barrier,
    broadcast_choice,
    current_info,
    sync_batchnorm,
)
from napari_medgan.training.ema import make_ema, unwrap, update_ema
from napari_medgan.training.history import HISTORY_FILE, History
from napari_medgan.training.outputs import decode_samples


class TrainingError(RuntimeError):
    """Training cannot go on (repeated divergence, ...); the message says why and what to try."""


class Trainer:
    """Train a 3D GAN described by a :class:`RunConfig`.

    Parameters
    ----------
    run : RunConfig
        Data, model and training settings. ``run.out`` is the run directory;
        ``run.resume`` continues from its latest checkpoint; ``run.init``
        fine-tunes from a checkpoint (architecture taken from there).
    images, labels, targets : list of Volume, optional
        Training volumes handed in directly (e.g. from napari layers) instead
        of ``run.data.source``.
    write : bool
        Write checkpoints, config and logs to ``run.out`` (rank 0 only).
    """

    def __init__(self, run: RunConfig, images=None, labels=None, targets=None, write: bool = True):
        self.config = copy.deepcopy(run)
        self._inputs = (images, labels, targets)
        self.dist = current_info()
        self.write = write and self.dist.is_main
        self.out = Path(self.config.out)
        self._stop = threading.Event()
        self._budget: float | None = None  # seconds of wall clock the run may take (stop_after)
        self._running = threading.Event()
        self._running.set()
        self.step = 0
        self.pin_batches = True  # batches reach a GPU from page-locked memory (to_device)
        self.data = None
        self.generator: nn.Module | None = None
        self.ema: nn.Module | None = None
        self._lock = None  # the run folder's lock, held by the writing rank while it runs
        self.history = History(self.out, self.write)  # the training record (history.jsonl)
        self._recording = False  # set once the record is trimmed to the resumed step

    # ------------------------------------------------------------ run control
    def stop(self) -> None:
        """Ask the loop to stop after the current step (a final checkpoint is written)."""
        self._stop.set()
        self._running.set()

    def stop_after(self, seconds: float) -> None:
        """Stop (between steps, with a final checkpoint) once ``seconds`` of wall clock have
        passed from now: a training budget."""
        self._budget = float(seconds)
        timer = threading.Timer(float(seconds), self.stop)
        timer.daemon = True
        timer.start()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    # ------------------------------------------------------------------ setup
    def _setup(self) -> Iterator[ev.Event]:
        from napari_medgan.data.augment import DiffAugment3D
        from napari_medgan.data.datasets import build_training_data
        from napari_medgan.models import build_discriminator, build_generator
        from napari_medgan.training.bundle import load_checkpoint_or_bundle
        from napari_medgan.training.checkpoint import CheckpointManager

        run, cfg = self.config, self.config.train
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.amp_dtype = resolve_precision(cfg.precision, self.device)
        torch.manual_seed(cfg.seed + self.dist.rank)
        self.rng = np.random.default_rng(cfg.seed + self.dist.rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # until _choose_speed has timed it
        else:
            # Denormal floats (weights and gradients drifting towards zero, e.g. from
            # zero-initialised output layers) make x86 CPUs 10-50x slower per operation; a
            # label2image step went from 0.4 s to 8 s within ten steps. Flush them to zero.
            torch.set_flush_denormal(True)
        self._kept_host_memory = resolve_keep_host_memory(cfg.keep_host_memory, self.device) \
            and keep_host_memory(True)

        yield from self._lock_run_folder()
        source_ckpt = None
        if run.resume:
            source_ckpt = self._resume_from()
            if source_ckpt is None:
                yield ev.MessageEvent(0, "warning", f"{self.out}: the run stopped before its "
                                      "first checkpoint; starting it again from step 0")
        else:
            refuse_used_folder(self.out)
            barrier()  # every rank has looked before the writing rank writes config.yaml
            if run.init:  # a checkpoint, a run folder or a model bundle (training/bundle.py)
                source_ckpt = load_checkpoint_or_bundle(run.init)
        if source_ckpt is not None:
            # The architecture comes from the checkpoint, not from the flags.
            run.model = source_ckpt.model_config()

        images, labels, targets = self._inputs
        self.data = build_training_data(run, images=images, labels=labels, targets=targets)
        needs_labels = TASKS[run.model.task].needs_labels
        if needs_labels and run.model.num_classes == 0:
            run.model.num_classes = int(self.data.num_classes)
        elif needs_labels and self.data.num_classes > run.model.num_classes:
            raise ValueError(
                f"model.num_classes: the data has labels up to {self.data.num_classes - 1} but the "
                f"model was built for {run.model.num_classes} classes"
            )

        if cfg.memory_check == "on":
            yield self._check_memory()
        self.G = build_generator(run.model)
        if source_ckpt is None and hasattr(self.G, "fit_to_data"):
            # generators that start from a classical estimate fit it here (lookup table,
            # intensity map); from a checkpoint it comes with the weights
            self.G.fit_to_data(self.data)
        self.G = self.G.to(self.device)
        self.D = build_discriminator(run.model).to(self.device)
        self.augment = DiffAugment3D(p=cfg.augment_p) if cfg.augment else None
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas)
        # fp16 needs loss scaling (its small gradients underflow); bf16 and fp32 do not
        fp16 = self.amp_dtype == torch.float16
        self.scalers = {id(opt): torch.amp.GradScaler(self.device.type, enabled=fp16)
                        for opt in (self.opt_g, self.opt_d)}
        self.ema = make_ema(self.G)
        self.divergences = 0
        self._memory_format = torch.contiguous_format

        if source_ckpt is not None:
            source_ckpt.load_module("generator", self.G)
            if run.resume or "discriminator" in source_ckpt.module_names:
                source_ckpt.load_module("discriminator", self.D)  # a bundle has none: D anew
            source_ckpt.load_module("ema", self.ema)
            if run.resume:
                from napari_medgan.training.rng import restore_rng

                source_ckpt.load_optimizer("optim_g", self.opt_g)
                source_ckpt.load_optimizer("optim_d", self.opt_d)
                st = source_ckpt.state
                for opt, saved in zip((self.opt_g, self.opt_d), st.get("grad_scalers") or ()):
                    if saved:
                        self.scalers[id(opt)].load_state_dict(saved)
                self.step = int(st["step"])
                self.divergences = int(st.get("divergences", 0))
                restore_rng(st["rng"], {"data": self.rng})
                self._begin_record()
                yield ev.MessageEvent(self.step, "info",
                                      f"resumed from {source_ckpt.path} at step {self.step}")
            else:
                yield ev.MessageEvent(0, "info", f"fine-tuning from {source_ckpt.path}")

        if cfg.grad_checkpoint == "on":
            from napari_medgan.training.speed import enable_grad_checkpointing

            enable_grad_checkpointing(self.G)
        compile_g = yield from self._choose_speed()
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # every rank's batch in the statistics (nn.SyncBatchNorm needs a GPU)
            self.G = DDP(sync_batchnorm(self.G, self.device), device_ids=ids)
            self.D = DDP(self.D, device_ids=ids)
        if compile_g:
            self.G = torch.compile(self.G)

        self.manager = CheckpointManager(self.out, keep_last=cfg.keep_last) if self.write else None
        if self.write:
            self.out.mkdir(parents=True, exist_ok=True)
            run.to_yaml(self.out / "config.yaml")
        if not self._recording:
            self._begin_record()
        # Fixed inputs for previews and for the checkpoint quality figure.
        fixed = np.random.default_rng(cfg.seed + 12345)
        gen = torch.Generator().manual_seed(cfg.seed + 12345)
        if run.model.conditional:
            batch = self.data.sample_batch(max(cfg.preview_count, 4), fixed)
            self.fixed_condition = batch["condition"]
            self.fixed_target = batch["image"]
        else:
            self.fixed_latent = unwrap(self.G).sample_latent(max(cfg.preview_count, 4), generator=gen)
            # intensities of 8 real samples for the checkpoint figure (a histogram): at most
            # 2^18 voxels of each, drawn one sample at a time, so that a whole-volume family
            # does not hold eight 256^3 volumes for it
            reals = [self.data.sample_batch(1, fixed)["image"][0, 0].flatten() for _ in range(8)]
            self.fixed_real = torch.cat([
                r if r.numel() <= 2**18 else r[torch.randint(r.numel(), (2**18,), generator=gen)]
                for r in reals])
        self._snapshot = self._capture_state()
        self._val_pairs = self.data.validation_pairs() if run.model.conditional else []
        self.validation: dict = {}
        self._best_ema: dict | None = None
        self._start_ema: dict | None = None
        self._start_errors = self._best_errors = self._val_counts = None
        world = f", {self.dist.world_size} processes" if self.dist.enabled else ""
        self.history.write("start", self.step, resumed=bool(run.resume), model=run.model.name,
                           task=run.model.task, device=str(self.device),
                           precision=str(self.amp_dtype or "fp32").split(".")[-1],
                           processes=self.dist.world_size if self.dist.enabled else 1)
        yield ev.MessageEvent(
            self.step, "info",
            f"training {run.model.name}/{run.model.task} at {_shape_text(self.data.patch_shape)} on "
            f"{describe_device(self.device)}, precision "
            f"{'fp32' if self.amp_dtype is None else str(self.amp_dtype).split('.')[-1]}{world}",
        )
        if self._val_pairs:  # step 0: the starting estimate's figure
            yield self._validate()

    def _lock_run_folder(self) -> Iterator[ev.Event]:
        """Take the run folder's lock on the writing rank (:mod:`.lock`), so that a second
        trainer on this folder refuses; every rank raises TrainingError when it is held."""
        from napari_medgan.training.lock import RunFolderInUse, RunFolderLock, describe_holder

        refusal = None
        if self.write:
            try:
                self._lock = RunFolderLock(self.out).acquire()
            except RunFolderInUse as exc:
                refusal = str(exc)
        if not all_ranks_agree(refusal is None):
            raise TrainingError(refusal or f"{self.out}: run folder is in use by another "
                                "training process; wait for it to finish or stop it")
        if self._lock is None:
            return
        remove_leftovers(self.out)  # e.g. a config.yaml half-written when it was killed
        if self._lock.stale:
            yield ev.MessageEvent(0, "warning", f"{self.out}: taking over from a training "
                                  f"process that ended without finishing "
                                  f"({describe_holder(self._lock.stale)})")

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _resume_from(self):
        """The run's latest checkpoint; None for a run killed before its first one (it has
        its config.yaml but no checkpoint), which starts again with that config's model."""
        from napari_medgan.training.checkpoint import (
            CheckpointError,
            CheckpointManager,
            load_checkpoint,
        )

        try:
            return load_checkpoint(self.out)
        except CheckpointError:
            config = self.out / "config.yaml"
            if not config.is_file() or CheckpointManager(self.out).latest() is not None:
                raise
        self.config.model = RunConfig.from_yaml(config).model
        return None

    def _check_memory(self) -> ev.MessageEvent:
        """Plan the step's peak memory before the networks exist (training/memory.py):
        a MessageEvent saying it fits, or ValueError with the one-line refusal (on every
        rank when any rank's plan does not fit)."""
        from napari_medgan.training.memory import plan_memory

        processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if self.dist.enabled else 1
        plan = plan_memory(self.config, self.device, data_bytes=self.data.nbytes,
                           processes=processes)
        if not all_ranks_agree(plan.fits):
            raise ValueError(plan.summary() if not plan.fits else
                             "memory: another training process's device cannot fit this run")
        return ev.MessageEvent(self.step, "info", plan.summary())

    # ------------------------------------------------------------- one step
    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.augment is None:
            return x
        return self.augment(x, intensity_channels=self._intensity_channels())

    def _intensity_channels(self) -> list[int]:
        """Channels of ``cat(condition, image)`` that carry intensities: an image condition's
        first channel and the image's first (one-hot labels and masks are never brightened)."""
        task = TASKS[self.config.model.task]
        cond = task.condition_channels(self.config.model.num_classes)
        return ([0] if task.condition.startswith("image") else []) + [cond]

    def _train_step(self) -> dict[str, torch.Tensor | float]:
        """One optimisation step on a fresh batch (:meth:`_step_on`)."""
        return self._step_on(self.data.sample_batch(self.config.train.batch_size, self.rng))

    def _step_on(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        """The family's own ``train_step(trainer, batch)`` when its module has one, else
        :meth:`adversarial_step`. Losses may stay on the device (no host sync per step)."""
        from napari_medgan.models import get_model

        family_step = getattr(get_model(self.config.model.name), "train_step", None)
        return family_step(self, batch) if family_step is not None else \
            self.adversarial_step(batch)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A batch tensor on the training device, in the memory format the networks use.

        On a GPU the host tensor is first copied to page-locked memory (``pin_batches``):
        a copy from pageable memory waits for the GPU to finish the work already queued,
        so the host could not draw the next batch while the GPU ran this step."""
        if self.pin_batches and x.device.type == "cpu" and self.device.type == "cuda":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self._memory_format) if x.ndim == 5 else x

    def _choose_speed(self) -> Iterator[ev.Event]:
        """Settle ``train.memory_format`` and ``train.compile``, and on a GPU cuDNN's
        autotuning: given settings are used; ``auto`` ones are decided by timing this run's
        own step for each choice on copies of the networks (the run itself starts from the
        untouched weights and RNG state). Timed on a GPU always, on the CPU for runs of
        500+ steps without a time budget under :data:`CPU_TRIAL_BUDGET` (the trial is a dozen
        steps, 15 s of the demo's 220 on a 2-core CPU, where the two formats' speeds were
        within the machine's own spread: a short budgeted run gains more steps by not
        timing them); compile is tried only on a GPU for runs
        of 2000+ steps and judged with its compile time included. Under DDP every rank takes
        rank 0's choice. Returns whether to compile the generator."""
        from napari_medgan.training.speed import memory_format

        cfg = self.config.train
        cuda = self.device.type == "cuda"
        left = max(cfg.steps - self.step, 1)
        formats = [cfg.memory_format] if cfg.memory_format != "auto" else \
            (["contiguous", "channels_last"] if cuda or (
                left >= 500 and (self._budget or CPU_TRIAL_BUDGET) >= CPU_TRIAL_BUDGET)
             else ["contiguous"])
        compiles = {"on": [True], "off": [False]}.get(cfg.compile) or (
            [False, True] if cuda and left >= 2000 else [False])
        tunes = [True, False] if cuda else [False]
        choices = [(f, c, t) for f in formats for c in compiles for t in tunes]
        chosen, note = 0, ""
        if len(choices) > 1:
            totals = []
            for fmt, comp, tune in choices:
                torch.backends.cudnn.benchmark = tune
                first, typical = self._time_choice(memory_format(fmt), comp)
                totals.append((first if comp else 0.0) + left * typical)
            chosen = broadcast_choice(int(np.argmin(totals)))
            note = " (timed: " + ", ".join(
                f"{_speed_text(*c)} {t / left:.3g} s/step" for c, t in zip(choices, totals)) + ")"
        fmt, comp, tune = choices[chosen]
        torch.backends.cudnn.benchmark = tune
        self._memory_format = memory_format(fmt)
        for net in (self.G, self.D, self.ema):
            net.to(memory_format=self._memory_format)
        if len(choices) > 1:
            yield ev.MessageEvent(self.step, "info",
                                  f"speed: {_speed_text(fmt, comp, tune)}{note}")
        return comp

    def _time_choice(self, fmt: torch.memory_format, compile_g: bool) -> tuple[float, float]:
        """``(first, typical)`` seconds of the real step with networks in ``fmt`` (compiled
        or not), on copies and a fixed batch; the trainer's networks, optimisers and RNG
        state are left as they were."""
        from napari_medgan.training.speed import time_steps

        saved = (self.G, self.D, self.ema, self.opt_g, self.opt_d, self.scalers,
                 self._memory_format, self.step)
        rng_state = torch.random.get_rng_state()
        cuda_state = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        cfg = self.config.train
        batch = self.data.sample_batch(cfg.batch_size, np.random.default_rng(0))
        try:
            self.G, self.D, self.ema = (copy.deepcopy(n).to(memory_format=fmt)
                                        for n in saved[:3])
            betas = (cfg.beta1, cfg.beta2)
            self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas)
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas)
            self.scalers = {id(self.opt_g): saved[5][id(saved[3])],
                            id(self.opt_d): saved[5][id(saved[4])]}
            self._memory_format = fmt
            if compile_g:
                self.G = torch.compile(self.G)

            def step():
                self.step += 1
                self._step_on(batch)

            return time_steps(step, self.device)
        finally:
            (self.G, self.D, self.ema, self.opt_g, self.opt_d, self.scalers,
             self._memory_format, self.step) = saved
            torch.random.set_rng_state(rng_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, self.device)
            release_memory(self.device)

    def adversarial_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The GAN step every built-in family uses: one discriminator update (non-saturating
        loss by default, lazy R1), then one generator update through the updated D, plus L1
        and feature matching for conditional families; the EMA follows. Returns the losses,
        detached on the device (read by the loop at its log intervals)."""
        cfg, model = self.config.train, self.config.model
        real = self.to_device(batch["image"])
        cond = self.to_device(batch["condition"]) if model.conditional else None
        d_module = unwrap(self.D)
        losses: dict[str, torch.Tensor] = {}

        from napari_medgan.training.losses import discriminator_loss, generator_loss

        # One generator forward serves both updates (as in DCGAN and pix2pix): D learns on
        # fake.detach(), then G's loss goes through the freshly updated D.
        with autocast(self.device, self.amp_dtype):
            fake = self.G(cond if cond is not None else self._latent(real.shape[0]))
        real_in = real if cond is None else torch.cat([cond, real], 1)

        def with_cond(x: torch.Tensor) -> torch.Tensor:
            return x if cond is None else torch.cat([cond, x], 1)

        # ---- discriminator: one forward over real and fake together (one DDP pass)
        both = self._augment(torch.cat([real_in, with_cond(fake.detach().float())], 0))
        do_r1 = self.r1_due()
        if do_r1:
            both = both.detach().requires_grad_(True)
        with autocast(self.device, self.amp_dtype):
            logits = self.D(both)
        logits = logits.float()
        real_logits, fake_logits = logits.chunk(2, 0)
        loss_d = discriminator_loss(cfg.loss, real_logits, fake_logits)
        losses["D"] = loss_d.detach()
        if do_r1:
            loss_d = self.with_r1(loss_d, real_logits, both, losses)
        self._update(self.opt_d, loss_d, self.D)

        # ---- generator (D frozen, called unwrapped so its DDP reducer is not involved)
        d_module.requires_grad_(False)
        with autocast(self.device, self.amp_dtype):
            g_logits = d_module(self._augment(with_cond(fake)))
        loss_g = generator_loss(cfg.loss, g_logits.float())
        losses["G"] = loss_g.detach()
        if cond is not None:
            loss_g = loss_g + self.conditional_terms(
                fake, real, getattr(d_module, "features", None), real_in, with_cond(fake),
                losses)
        self._update(self.opt_g, loss_g, self.G)
        d_module.requires_grad_(True)
        update_ema(self.ema, self.G, cfg.ema_decay, self.step)
        return losses

    def r1_due(self) -> bool:
        """Whether this step adds the R1 penalty: lazy regularisation, every ``r1_every``
        steps (Karras et al. 2020)."""
        cfg = self.config.train
        return cfg.r1_gamma > 0 and self.step % cfg.r1_every == 0

    def with_r1(self, loss_d: torch.Tensor, real_logits: torch.Tensor, real_inputs,
                losses: dict) -> torch.Tensor:
        """``loss_d`` plus the R1 penalty of ``real_logits`` with respect to ``real_inputs``
        (which had ``requires_grad`` set before they went through D), scaled by
        ``r1_every`` for its lazy rate; the penalty is recorded as ``losses["R1"]``."""
        from napari_medgan.training.losses import r1_penalty

        cfg = self.config.train
        r1 = r1_penalty(real_logits, real_inputs, scaler=self.scalers[id(self.opt_d)])
        losses["R1"] = r1.detach()
        return loss_d + 0.5 * cfg.r1_gamma * cfg.r1_every * r1

    def conditional_terms(self, fake: torch.Tensor, target: torch.Tensor, features,
                          real_in: torch.Tensor, fake_in: torch.Tensor,
                          losses: dict) -> torch.Tensor | float:
        """The conditional generator's terms beside the GAN loss (pix2pix, pix2pixHD): L1 to
        the target and, when the discriminator has ``features``, feature matching between
        ``fake_in`` and ``real_in``, each weighted by its setting (0 = off) and recorded in
        ``losses`` (``"L1"``, ``"FM"``)."""
        cfg, extra = self.config.train, 0.0
        if cfg.l1_weight > 0:
            l1 = F.l1_loss(fake.float(), target)
            extra = extra + cfg.l1_weight * l1
            losses["L1"] = l1.detach()
        if cfg.fm_weight > 0 and features is not None:
            fm = self.feature_matching(features, real_in, fake_in)
            extra = extra + cfg.fm_weight * fm
            losses["FM"] = fm.detach()
        return extra

    def feature_matching(self, features, real_in: torch.Tensor,
                         fake_in: torch.Tensor) -> torch.Tensor:
        """Feature matching (pix2pixHD, Wang et al. 2018): the mean L1 distance, layer by
        layer, between the discriminator's ``features`` of the fake and of the real input
        (no gradient through the real side), both un-augmented so they see the same
        transform."""
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            real_feats = features(real_in)
        with autocast(self.device, self.amp_dtype):
            fake_feats = features(fake_in)
        fm = sum(F.l1_loss(f.float(), r.float()) for f, r in zip(fake_feats, real_feats))
        return fm / len(real_feats)

    def _update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                module: nn.Module) -> None:
        """One optimiser step on ``loss``, with the configured gradient clipping (and, in
        fp16, the optimiser's loss scaler: a step whose gradients overflowed is skipped)."""
        scaler = self.scalers[id(optimizer)]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.config.train.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(module.parameters(), self.config.train.grad_clip)
        scaler.step(optimizer)
        scaler.update()

    def _latent(self, n: int) -> torch.Tensor:
        return unwrap(self.G).sample_latent(n, device=self.device)

    # ---------------------------------------------------- divergence guard
    def _capture_state(self) -> dict:
        def cpu(sd):
            return {k: (v.detach().cpu().clone() if torch.is_tensor(v) else copy.deepcopy(v))
                    for k, v in sd.items()}

        return {
            "G": cpu(unwrap(self.G).state_dict()),
            "D": cpu(unwrap(self.D).state_dict()),
            "ema": cpu(self.ema.state_dict()),
            "opt_g": copy.deepcopy(self.opt_g.state_dict()),
            "opt_d": copy.deepcopy(self.opt_d.state_dict()),
            "step": self.step,
        }

    def _roll_back(self) -> None:
        """Back to the last snapshot (weights, optimisers, step), learning rates halved."""
        snap = self._snapshot
        self.step = snap["step"]
        unwrap(self.G).load_state_dict(snap["G"])
        unwrap(self.D).load_state_dict(snap["D"])
        self.ema.load_state_dict(snap["ema"])
        self.opt_g.load_state_dict(snap["opt_g"])
        self.opt_d.load_state_dict(snap["opt_d"])
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] *= 0.5

    def _weights_finite(self) -> bool:
        """Whether every floating-point weight and buffer of G and the EMA is finite, on
        every rank (one host sync)."""
        nets = (unwrap(self.G), self.ema)
        flags = [torch.isfinite(t).all() for net in nets
                 for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
        return all_ranks_agree(bool(torch.stack(flags).all()) if flags else True)

    def _keep_finite_weights(self) -> Iterator[ev.Event]:
        """Never save non-finite weights: roll back to the last snapshot (verified finite
        when taken, learning rates halved as after a divergence); TrainingError, with
        nothing saved, when even that is not finite."""
        if self._weights_finite():
            return
        bad = self.step
        self._roll_back()
        if not self._weights_finite():
            raise TrainingError(
                f"{self.out}: the generator's weights are not finite at step {bad} and there is "
                "no finite state to roll back to, so no checkpoint was written; lower the "
                "learning rates (--lr-g/--lr-d), use --precision fp32, or check the data")
        yield ev.MessageEvent(self.step, "warning", f"non-finite generator weights at step "
                              f"{bad}; rolled back to step {self.step}, the last finite state, "
                              "before saving (learning rates halved)")

    def _lrs(self) -> tuple[float, float]:
        return self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]

    # ------------------------------------------------------------------ run
    def run(self) -> Iterator[ev.Event]:
        """Train, yielding events; ends with a :class:`DoneEvent` (or raises TrainingError,
        or :class:`~napari_medgan.io.atomic.DiskFullError` saying how to resume). The run
        folder is locked from the start until the run ends, fails or is closed."""
        try:
            for event in self._train():
                self._record(event)
                yield event
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            where = getattr(exc, "path", None) or exc.filename or self.out
            raise DiskFullError(where, advice=(
                "the checkpoints saved before are intact; free space, then resume the run: "
                f"napari-medgan train --resume --out {self.out} (Train GAN: Start from "
                "'resume run folder')")) from None
        finally:
            self.history.close()
            self._release_lock()
            release_memory(getattr(self, "device", None))
            if getattr(self, "_kept_host_memory", False):  # the process's own again
                keep_host_memory(False)
                self._kept_host_memory = False

    def _begin_record(self) -> None:
        """Trim the record to the step the run (re)starts from; record from now on."""
        self.history.begin(self.step)
        self._recording = True

    def _record(self, event: ev.Event) -> None:
        """Put an event into ``history.jsonl`` (writing rank; from the start of the record)."""
        if not self._recording:
            return
        write = self.history.write
        if isinstance(event, ev.StepEvent) and event.losses:
            write("step", event.step, losses=event.losses, lr_g=event.lr_g, lr_d=event.lr_d,
                  seconds_per_step=round(event.seconds, 5))
        elif isinstance(event, ev.PreviewEvent):
            self.history.save_preview(event.step, event.volumes, event.labels)
        elif isinstance(event, ev.MessageEvent) and event.level in ("info", "warning"):
            write("message", event.step, level=event.level, text=event.text)
        elif isinstance(event, ev.DoneEvent):
            write("done", event.step, reason=event.reason)

    def _train(self) -> Iterator[ev.Event]:
        """The body of :meth:`run`: set up, step until done or stopped, save the final
        checkpoint."""
        yield from self._setup()
        total = self.config.train.steps
        cfg = self.config.train
        reason = "finished"
        self._pending: list[dict] = []
        t_read, seconds = time.perf_counter(), 0.0
        while self.step < total:
            while not self._running.wait(timeout=0.05):
                t_read = time.perf_counter()  # a pause is not step time
            if self._stop.is_set():
                reason = "stopped"
                break
            self._pending.append(self._train_step())
            self.step += 1
            losses: dict[str, float] = {}
            if self._read_due():
                # the one host sync of the interval: mean losses since the last read
                count = len(self._pending)
                losses, finite = self._read_losses()
                if not finite:
                    yield from self._handle_divergence(losses)
                    t_read = time.perf_counter()
                    continue
                now = time.perf_counter()
                seconds, t_read = (now - t_read) / count, now
                if (self.step - self._snapshot["step"] >= 50 or self.step == total) \
                        and self._weights_finite():
                    self._snapshot = self._capture_state()
            lr_g, lr_d = self._lrs()
            yield ev.StepEvent(self.step, total, losses, seconds, lr_g, lr_d)
            if self.step % cfg.preview_every == 0 or self.step == total:
                yield self.preview()
            if self._val_pairs and self.step % cfg.val_every == 0:
                yield self._validate()
            if self.step % cfg.checkpoint_every == 0 and self.step < total:
                yield from self._save("last")
        if self._stop.is_set() and self.step < total:
            reason = "stopped"
        if self._val_pairs:
            if self.validation["last_step"] != self.step:
                yield self._validate()
            yield self._keep_best()
        path = None
        for event in self._save("final"):
            if isinstance(event, ev.CheckpointEvent) and event.kind == "final":
                path = event.path
            yield event
        yield ev.DoneEvent(self.step, reason, path)

    def _read_due(self) -> bool:
        """Whether the losses are read (a host sync) after this step: at log intervals, and
        before anything that uses the weights (preview, validation, checkpoint, snapshot)."""
        cfg, step = self.config.train, self.step
        every = [cfg.log_every, cfg.preview_every, cfg.checkpoint_every, 50]
        if self._val_pairs:
            every.append(cfg.val_every)
        return (step == cfg.steps or self._stop.is_set() or self.paused
                or any(step % n == 0 for n in every))

    def _read_losses(self) -> tuple[dict[str, float], bool]:
        """Mean of each loss over the steps since the last read, with one transfer to the
        host, and whether every step's losses were finite on every rank. Under fp16 an
        infinite R1 penalty is an overflow the loss scaler handles (it skips the step)."""
        pending, self._pending = self._pending, []
        sums: dict[str, list] = {}  # name -> [device tensor sum, host float sum, count]
        for losses in pending:
            for name, value in losses.items():
                entry = sums.setdefault(name, [None, 0.0, 0])
                if torch.is_tensor(value):
                    value = value.detach().float()
                    entry[0] = value if entry[0] is None else entry[0] + value
                else:
                    entry[1] += float(value)
                entry[2] += 1
        on_device = [k for k, e in sums.items() if e[0] is not None]
        read = dict(zip(on_device, torch.stack([sums[k][0] for k in on_device]).cpu().tolist()
                        if on_device else []))
        means = {k: (read.get(k, 0.0) + e[1]) / e[2] for k, e in sums.items()}
        scaled = self.amp_dtype == torch.float16
        finite = all(math.isfinite(v) for k, v in means.items() if not (scaled and k == "R1"))
        return means, all_ranks_agree(finite)

    def _handle_divergence(self, losses: dict[str, float]) -> Iterator[ev.Event]:
        self.divergences += 1
        bad = ", ".join(f"{k}={v}" for k, v in losses.items() if not math.isfinite(v))
        if self.divergences > self.config.train.max_divergences:
            raise TrainingError(
                f"training diverged {self.divergences} times (last at step {self.step + 1}: {bad}); "
                "lower the learning rates (--lr-g/--lr-d), use --precision fp32, or check the data"
            )
        self._roll_back()
        lr_g, lr_d = self._lrs()
        yield ev.MessageEvent(
            self.step, "warning",
            f"non-finite loss ({bad}); rolled back to step {self.step} and halved the learning "
            f"rates (G {lr_g:.2e}, D {lr_d:.2e}) [{self.divergences}/{self.config.train.max_divergences}]",
        )

    # -------------------------------------------------------------- outputs
    @torch.no_grad()
    def _ema_output(self, n: int | None = None) -> torch.Tensor:
        cond = getattr(self, "fixed_condition", None)
        inp = cond if cond is not None else self.fixed_latent
        inp = inp[: n or inp.shape[0]].to(self.device)
        with autocast(self.device, self.amp_dtype):
            out = self.ema(inp)
        return out.float().cpu()

    def preview(self) -> ev.PreviewEvent:
        """Fixed-seed samples of the EMA generator, in original units with the data's geometry."""
        n = self.config.train.preview_count
        out = self._ema_output(n)
        cond = getattr(self, "fixed_condition", None)
        images, labels, conditions = decode_samples(
            out, self.config.model, self.data.target_normalizer or self.data.normalizer,
            self.data.reference, condition=None if cond is None else cond[:n],
            condition_normalizer=self.data.normalizer,
        )
        return ev.PreviewEvent(self.step, images, labels, conditions)

    @torch.no_grad()
    def _val_errors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Absolute error (normalised units) of the EMA generator over the scored voxels of
        the held-out windows, each run whole by Gaussian-blended sliding windows, summed per
        cube of ``VAL_BLOCK`` voxels a side: ``(error sums, scored voxel counts)``, one entry
        per block that has scored voxels, in the same order at every validation."""
        from napari_medgan.training.inference import run_windows

        sums, counts = [], []
        for cond, truth, scored in self._val_pairs:
            with autocast(self.device, self.amp_dtype):
                out = run_windows(self.ema, cond.to(self.device), self.config.model.patch_size,
                                  padding_mode="replicate")
            err = (out.float().cpu() - truth).abs() * scored
            sums.append(block_sums(err[0, 0], VAL_BLOCK))
            counts.append(block_sums(scored[0, 0].float(), VAL_BLOCK))
        s, n = torch.cat(sums).double(), torch.cat(counts).double()
        return s[n > 0], n[n > 0]

    def _val_score(self) -> float:
        """Mean absolute error (normalised units) of the EMA generator on the held-out
        windows (:meth:`_val_errors`)."""
        s, n = self._val_errors()
        return float(s.sum() / n.sum().clamp_min(1))

    def _validate(self) -> ev.MessageEvent:
        """Score the EMA generator on the held-out slab; remember its weights when best, and
        the starting generator's, which a later one must beat by more than the noise."""
        s, n = self._val_errors()
        score = float(s.sum() / n.sum().clamp_min(1))
        val = self.validation
        if not val:
            val.update(start=score, start_step=self.step, best=score, best_step=self.step)
            self._start_ema, self._start_errors, self._val_counts = self._ema_state(), s, n
        if score < val["best"] or self._best_ema is None:
            val.update(best=score, best_step=self.step)
            self._best_ema, self._best_errors = self._ema_state(), s
        val.update(last=score, last_step=self.step)
        self.history.write("validation", self.step, validation_l1=score)
        return ev.MessageEvent(
            self.step, "progress",
            f"validation L1 {score:.4f} (best {val['best']:.4f} at step {val['best_step']})")

    def _keep_best(self) -> ev.MessageEvent:
        """Put the best-validated EMA weights into the generator that is saved last, unless
        their gain over the starting generator is within the noise of the held-out slab
        (:func:`paired_gain`): then the starting generator is kept."""
        val = self.validation
        start = f"step {val['start_step']}" + (", the starting estimate" if not val["start_step"]
                                                else "")
        note = ""
        if val["best_step"] != val["start_step"] and self._start_errors is not None:
            gain, noise = paired_gain(self._start_errors, self._best_errors, self._val_counts)
            val.update(gain=gain, gain_noise=noise if math.isfinite(noise) else None)
            if gain <= noise:
                note = (f"; step {val['best_step']} scored {val['best']:.4f}, a gain of "
                        f"{gain:.4f} within the held-out noise ({noise:.4f})")
                val.update(lowest=val["best"], lowest_step=val["best_step"],
                           best=val["start"], best_step=val["start_step"])
                self._best_ema = self._start_ema
        if val["best_step"] != self.step:
            self.ema.load_state_dict(self._best_ema)
        return ev.MessageEvent(
            self.step, "info",
            f"keeping the generator of step {val['best_step']}: held-out L1 {val['best']:.4f} "
            f"({start}: {val['start']:.4f}; step {val['last_step']}: {val['last']:.4f}{note})")

    def _ema_state(self) -> dict:
        return {k: v.detach().clone() for k, v in self.ema.state_dict().items()}

    def quality(self) -> float:
        """Checkpoint figure (lower is better): L1 to fixed targets for conditional models,
        else the Wasserstein-1 distance between intensity histograms of fixed-seed samples
        and fixed real patches (normalised units)."""
        out = self._ema_output()
        if self.config.model.conditional:
            return float((out - self.fixed_target).abs().mean())
        from napari_medgan.metrics.wasserstein import wasserstein_1d

        return wasserstein_1d(out[:, 0].numpy(), self.fixed_real.numpy())

    def _save(self, kind: str) -> Iterator[ev.Event]:
        yield from self._keep_finite_weights()
        if self.manager is not None:  # only the writing rank needs the quality figure
            metric = self.quality()
            best_before = self.manager.best_metric
            path = self.manager.save(
                self.step,
                modules={"generator": self.G, "discriminator": self.D, "ema": self.ema},
                optimizers={"optim_g": self.opt_g, "optim_d": self.opt_d},
                state=self._checkpoint_state(),
                metric=metric,
                final=(kind == "final"),
            )
            self.history.write("checkpoint", self.step, name=path.name, final=kind == "final",
                               best=False, quality=metric)
            yield ev.CheckpointEvent(self.step, str(path), kind)
            if self.manager.best_metric != best_before:
                self.history.write("checkpoint", self.step, name="best", final=False, best=True,
                                   quality=metric)
                yield ev.CheckpointEvent(self.step, str(self.manager.directory / "best"), "best")
        barrier()

    def _checkpoint_state(self) -> dict:
        from napari_medgan.models import get_model
        from napari_medgan.training.rng import capture_rng

        data = self.data
        ref = data.reference
        return {
            "package_version": __version__,
            "model_config": dataclasses.asdict(self.config.model),
            "model_layout": int(get_model(self.config.model.name).LAYOUT_VERSION),
            "run_config": self.config.to_dict(),
            "step": self.step,
            "divergences": self.divergences,
            "rng": capture_rng({"data": self.rng}),
            "normalizer": data.normalizer.to_dict(),
            "target_normalizer": data.target_normalizer.to_dict() if data.target_normalizer else None,
            "geometry": {**ref.geometry_dict(), "shape": list(ref.shape)},
            "num_classes": int(self.config.model.num_classes),
            "segments": getattr(data, "segments", None),
            "validation": dict(getattr(self, "validation", {})),
            "grad_scalers": [self.scalers[id(o)].state_dict() for o in (self.opt_g, self.opt_d)],
        }


#: a CPU run stopped by a shorter time budget (:meth:`Trainer.stop_after`) skips the speed
#: trial of the memory formats and trains in the contiguous one
CPU_TRIAL_BUDGET = 600.0

#: side (voxels) of the blocks that are the samples of the held-out comparison: neighbouring
#: voxels' errors are correlated, so counting single voxels would overstate the evidence
VAL_BLOCK = 4
#: a trained generator replaces the starting one only when its held-out gain exceeds this many
#: standard errors of the block-paired difference. One, not two: on the T1's training half
#: (a slab of about 2 500 voxels) through-plane x4 super-resolution lowered the held-out
#: error by 1.6 standard errors, a gain that held on the unseen half (+0.22 dB over the
#: B-spline), and two would have refused it
VAL_Z = 1.0


def block_sums(x: torch.Tensor, side: int) -> torch.Tensor:
    """Sums of a ``(D, H, W)`` tensor over cubes of ``side`` voxels a side (the last ones
    partial), flattened."""
    pad = [(-n) % side for n in x.shape]
    x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
    d, h, w = (n // side for n in x.shape)
    return x.reshape(d, side, h, side, w, side).sum((1, 3, 5)).flatten()


def paired_gain(before: torch.Tensor, after: torch.Tensor, counts: torch.Tensor,
                z: float = VAL_Z) -> tuple[float, float]:
    """How much ``after`` lowers the mean per-voxel error of ``before`` on the same blocks
    (``before``/``after``: each block's error sum; ``counts``: its voxels), and ``z``
    standard errors of that gain, from the spread of the blocks' own mean differences
    (blocks, not voxels, are the samples). Fewer than two blocks: the noise is infinite."""
    before, after, counts = (t.double() for t in (before, after, counts))
    total = float(counts.sum())
    gain = float((before - after).sum()) / total
    if counts.numel() < 2:
        return gain, math.inf
    per_block = (before - after) / counts
    b = counts.numel()
    var = float((counts ** 2 * (per_block - gain) ** 2).sum()) * b / (b - 1) / total ** 2
    return gain, z * math.sqrt(var)


def _speed_text(fmt: str, compiled: bool, tuned: bool) -> str:
    return fmt + ("+compile" if compiled else "") + ("+cudnn.benchmark" if tuned else "")


def _shape_text(shape_zyx) -> str:
    """``"32^3"`` for a cube, else ``"192x224x160 (x, y, z)"``."""
    if len(set(shape_zyx)) == 1:
        return f"{shape_zyx[0]}^3"
    return "x".join(str(n) for n in shape_zyx[::-1]) + " voxels (x, y, z)"


def refuse_used_folder(out: Path) -> None:
    """ValueError when ``out`` already holds a run (its config or checkpoints): a new run
    written there would mix its checkpoints, ``latest.json`` and ``config.yaml`` with the
    old one's, and a later load could pick up either model."""
    out = Path(out)
    used = [name for name in ("config.yaml", "checkpoints", HISTORY_FILE, "log.jsonl")
            if (out / name).exists()]
    if used:
        raise ValueError(f"{out}: already holds a run ({', '.join(used)}); resume it "
                         "(--resume / Start from: resume) or choose a new run folder")


def write_summary(path: Path, summary: dict) -> None:
    """Write a JSON summary atomically."""
    atomic_write_text(path, json.dumps(summary, indent=2))
