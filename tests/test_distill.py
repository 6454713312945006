"""Few-step students (cascade.training.distill, train/distill.py): the grid and scalings are LCMScheduler's, the
student predicts v, the target is the student's own weights under stop-gradient, every kind distils, a killed
run resumes exactly, and a student samples through every path a stage does (tiles, streaming, consistency,
SDEdit, the command line). Progressive distillation: its grids are DDIMScheduler's, its target makes one student
step land where two teacher steps do, and a run killed in its second round resumes exactly."""

import json
import re
import warnings

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, LCMScheduler
from PIL import Image

from cascade import Pipeline, upscale_to_file
from cascade.diffusion.sampling import make_sampler
from cascade.errors import CheckpointError
from cascade.inference.stage import Stage, Tiling
from cascade.training.distill import GRID_POINTS, ConsistencyDistillation, boundary_scalings, grid
from cascade.training.progressive import ProgressiveDistillation, ddim_grid, progressive_rounds
from cascade.training.students import clean_estimate, student_schedule
from conftest import load_script, run, run_in_process, run_together, tiny_stage


def test_the_grid_is_exactly_the_timesteps_lcm_samples():
    scheduler = LCMScheduler(beta_schedule="squaredcos_cap_v2")
    sampled = set()
    for steps in range(1, GRID_POINTS + 1):
        scheduler.set_timesteps(steps)
        sampled |= set(scheduler.timesteps.tolist())
    assert sampled == set(grid(1000).tolist())  # every step count samples the grid, and 50 samples all of it
    assert grid(1000)[0] == 19 and grid(1000)[-1] == 999 and len(grid(1000)) == 50


def test_boundary_scalings_are_lcm_schedulers():
    scheduler = LCMScheduler()
    for t in [0, 19, 259, 999]:
        c_skip, c_out = boundary_scalings(torch.tensor([t]))
        assert (c_skip.item(), c_out.item()) == pytest.approx(scheduler.get_scalings_for_boundary_condition_discrete(t))
    assert boundary_scalings(torch.tensor([0])) == (1.0, 0.0)  # f is the identity at t = 0


def test_the_student_predicts_v_because_an_epsilon_estimate_explodes_at_the_last_step():
    teacher = tiny_stage(16, scale=2)
    eps_teacher = type(teacher)(teacher.unet, DDPMScheduler(beta_schedule="squaredcos_cap_v2",
                                                            prediction_type="epsilon"), teacher.kind)
    assert student_schedule(eps_teacher).config.prediction_type == "v_prediction"
    assert student_schedule(teacher).config.prediction_type == "v_prediction"
    abar = eps_teacher.noise_scheduler.alphas_cumprod[999:].double()  # ~2e-9 on the cosine schedule
    x, error = torch.randn(1, 3, 8, 8), 0.01 * torch.randn(1, 3, 8, 8)
    def x0_error(kind):
        return (clean_estimate(error, x, abar, kind) - clean_estimate(torch.zeros_like(x), x, abar, kind)).abs().max()
    assert x0_error("v_prediction") <= error.abs().max() * 1.0001  # bounded by the prediction's own error
    assert x0_error("epsilon") > 100 * error.abs().max()  # amplified 1 / sqrt(abar) ~ 2e4


@pytest.mark.parametrize("eta, prediction, residual", [(0.0, "v_prediction", False), (0.5, "v_prediction", False),
                                                       (1.0, "v_prediction", False), (0.5, "epsilon", False),
                                                       (1.0, "v_prediction", True), (0.0, "epsilon", True)])
def test_the_teachers_step_is_diffusers_ddim_step(eta, prediction, residual):
    """Against DDIMScheduler.step for v- and epsilon-prediction teachers, with x0 clipped (an image) and not
    (a residual SR3 stage: clip_sample False, so a residual may leave [-1, 1])."""
    from dataclasses import replace

    from diffusers import DDIMScheduler

    from cascade.diffusion import rng

    teacher = tiny_stage(16, scale=2)  # its network; schedule and kind replaced below
    kind = replace(teacher.kind, residual=residual)
    schedule = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction, clip_sample=not residual)
    teacher = type(teacher)(teacher.unet, schedule, kind)
    objective = ConsistencyDistillation(teacher, teacher.unet.config, "v_prediction", eta=eta)
    x_t, t = 3 * torch.randn(2, 3, 16, 16), torch.tensor([999, 259])  # large: the unclipped x0 leaves [-1, 1]
    cond = {"cond_image": torch.randn(2, 3, 16, 16), "aug_level": torch.zeros(2)}
    got = objective.teacher_step(x_t, t, t - 20, cond, rng.example_generators(torch.tensor([5, 6])))
    noise = rng.randn(x_t.shape, rng.example_generators(torch.tensor([5, 6])))
    ddim = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction, clip_sample=not residual)
    ddim.set_timesteps(50)  # a step from t goes to t - 1000 / 50
    noclip = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction, clip_sample=False)
    noclip.set_timesteps(50)
    leaves = False
    for i in range(2):
        out = teacher.unet(x_t[i:i + 1], t[i:i + 1], **{k: c[i:i + 1] for k, c in cond.items()})
        want = ddim.step(out, int(t[i]), x_t[i:i + 1], eta=eta, variance_noise=noise[i:i + 1])
        assert torch.allclose(got[i:i + 1], want.prev_sample, atol=1e-4), (eta, prediction, residual, i)
        unclipped = noclip.step(out, int(t[i]), x_t[i:i + 1], eta=eta, variance_noise=noise[i:i + 1])
        leaves |= unclipped.pred_original_sample.abs().max().item() > 1
    assert leaves  # x0 leaves [-1, 1]: the case where clipping (or not) changes the step


@pytest.mark.parametrize("target", ["teacher", "data"])
def test_the_target_is_the_students_own_weights_under_stop_gradient(target):
    """The loss's gradient is that of pseudo-Huber(f(x_t, t) - T), where T is f at the grid point below computed
    with a detached network: the student itself under stop-gradient (`target_decay=0`), or a target network of its
    own (LCM's EMA, the default), which gives another loss and receives no gradient."""
    import copy

    from cascade.diffusion import rng

    teacher = tiny_stage(16, scale=2)
    student = copy.deepcopy(teacher.unet)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))
    objective = ConsistencyDistillation(teacher, student.config, "v_prediction", target, huber_c=0.001)
    batch = {"image": torch.rand(2, 3, 16, 16) * 2 - 1, "label": torch.zeros(2, dtype=torch.long), "seed": torch.tensor([3, 4])}

    def reference_loss(target_net):
        """The same draws (per-example generators), the target from `target_net`, detached."""
        generators = rng.example_generators(batch["seed"])
        x0, cond = objective.kind.training_inputs(student.config, batch["image"], objective.alphas_cumprod.float(),
                                                  generators)
        t = objective.grid[rng.randint(GRID_POINTS, 2, generators)]
        t_prev = (t - 20).clamp(min=0)
        noise = rng.randn(x0.shape, generators)
        a, a_prev = (objective.alphas_cumprod[s].view(-1, 1, 1, 1).float() for s in (t, t_prev))
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.no_grad():
            if target == "data":
                x_prev = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * noise
            else:  # one DDIM step of the (v-prediction, unguided) teacher
                x0_t = (a.sqrt() * x_t - (1 - a).sqrt() * teacher.unet(x_t, t, **cond)).clamp(-1, 1)
                x_prev = a_prev.sqrt() * x0_t + (1 - a_prev).sqrt() * (x_t - a.sqrt() * x0_t) / (1 - a).sqrt()
            frozen = objective.consistency(target_net, x_prev, t_prev, cond)[0]
        d = objective.consistency(student, x_t, t, cond)[0] - frozen
        return ((d ** 2 + 1e-6).sqrt() - 1e-3).mean()

    objective.loss(student, batch).backward()
    got = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    expected = reference_loss(copy.deepcopy(student))
    expected.backward()
    assert objective.loss(student, batch).item() == pytest.approx(expected.item(), rel=1e-5)
    for a, b in zip(got, (p.grad for p in student.parameters())):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-4)
    lagging = copy.deepcopy(teacher.unet)  # e.g. an EMA still near the teacher
    assert abs(reference_loss(lagging).item() - expected.item()) > 1e-4 * expected.item()
    # with a target network of its own (LCM's EMA), the target comes from it, and still no gradient reaches it
    objective.target_net = lagging
    student.zero_grad()
    assert objective.loss(student, batch).item() == pytest.approx(reference_loss(lagging).item(), rel=1e-5)


def test_progressive_grids_are_ddims_trailing_timesteps_and_nest():
    """The student samples with DDIMScheduler (trailing): its timesteps are the grid, and each step goes to the next
    grid point (the last to abar = 1). The teacher's grid at twice the steps holds the student's at every other
    point, for every round from 128 steps down."""
    schedule = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    for steps in (1, 2, 4, 8):
        sampler = make_sampler("ddim", schedule.config)
        sampler.set_timesteps(steps)
        g = ddim_grid(1000, steps)
        assert sampler.timesteps.tolist() == g[:-1].tolist()
        prev = [t - 1000 // steps for t in sampler.timesteps.tolist()]  # DDIMScheduler.step's previous timestep
        assert prev == g[1:].tolist() and g[-1] == -1
    for steps in (1, 2, 4, 8, 16, 32, 64):
        fine, coarse = ddim_grid(1000, 2 * steps), ddim_grid(1000, steps)
        assert torch.equal(fine[::2], coarse) and (fine[:-1] > fine[1:]).all()
    assert progressive_rounds(64, 4) == [32, 16, 8, 4] and progressive_rounds(8, 4) == [4]


@pytest.mark.parametrize("prediction, residual", [("v_prediction", False), ("epsilon", True)])
def test_the_progressive_target_makes_one_student_step_land_where_two_teacher_steps_do(prediction, residual):
    """At each of a 4-step student's grid points: the teacher's two steps are diffusers' DDIM at 8 steps (x0 clipped
    for an image, not for a residual), and the target x~, given to diffusers' DDIM at 4 steps as the student's v,
    lands where they land (the last step on abar = 1). The loss is the mean squared error of that v."""
    import copy
    from dataclasses import replace

    from diffusers import DDIMScheduler

    teacher = tiny_stage(16, scale=2)
    kind = replace(teacher.kind, residual=residual)
    schedule = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction, clip_sample=not residual)
    teacher = type(teacher)(teacher.unet, schedule, kind)
    objective = ProgressiveDistillation(teacher, teacher.unet.config, "v_prediction", steps=4)
    abar = schedule.alphas_cumprod.double()
    cond = {"cond_image": torch.randn(4, 3, 16, 16), "aug_level": torch.zeros(4)}
    i = torch.arange(4)
    t, t_next = ddim_grid(1000, 4)[:-1], ddim_grid(1000, 4)[1:]
    x_t = 2 * torch.randn(4, 3, 16, 16)
    x_next = objective.teacher_steps(x_t, i, cond)
    fine = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction, clip_sample=not residual,
                         timestep_spacing="trailing")
    fine.set_timesteps(8)
    coarse = make_sampler("ddim", student_schedule(teacher, clip=False).config)  # the progressive student's sampler
    coarse.set_timesteps(4)
    assert not coarse.config.clip_sample  # x~ may leave [-1, 1]: the student's step must not clip it
    target = objective.target(x_t, x_next, t, t_next)
    for k in range(4):
        x, c = x_t[k:k + 1], {n: v[k:k + 1] for n, v in cond.items()}
        for s in fine.timesteps[2 * k:2 * k + 2]:
            x = fine.step(teacher.unet(x, s.view(1), **c), int(s), x).prev_sample
        assert torch.allclose(x_next[k:k + 1], x, atol=1e-4), k
        a, sd = abar[t[k]].sqrt(), (1 - abar[t[k]]).sqrt()
        v = ((a * x_t[k].double() - target[k].double()) / sd).float()  # the v whose x0 estimate is x~
        landed = coarse.step(v[None], int(t[k]), x_t[k:k + 1]).prev_sample
        assert torch.allclose(landed, x_next[k:k + 1], atol=1e-4 * max(1, x_next[k].abs().max().item())), k
    # the loss: the student's v error, squared and averaged, at the draws of the batch's seeds
    from cascade.diffusion import rng

    student = copy.deepcopy(teacher.unet)
    with torch.no_grad():
        for p_ in student.parameters():
            p_.add_(0.02 * torch.randn_like(p_))
    batch = {"image": torch.rand(2, 3, 16, 16) * 2 - 1, "label": torch.zeros(2, dtype=torch.long),
             "seed": torch.tensor([3, 4])}
    generators = rng.example_generators(batch["seed"])
    x0, cond = kind.training_inputs(student.config, batch["image"], abar.float(), generators)
    j = rng.randint(4, 2, generators)
    noise = rng.randn(x0.shape, generators)
    a, sd = (abar[t[j]].sqrt().view(-1, 1, 1, 1).float(), (1 - abar[t[j]]).sqrt().view(-1, 1, 1, 1).float())
    z = a * x0 + sd * noise
    with torch.no_grad():
        goal = objective.target(z, objective.teacher_steps(z, j, cond), t[j], t_next[j])
    v_goal = (a * z - goal) / sd
    expected = ((student(z, t[j], **cond) - v_goal) ** 2).mean()
    assert objective.loss(student, batch).item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.fixture(scope="module")
def guided_teacher(tmp_path_factory):
    """A tiny class-conditional base stage sampled with guidance 1.5."""
    folder = tmp_path_factory.mktemp("guided")
    run("train/base.py", "--config", "configs/base_tiny.yaml", "train.max_steps=3", "sample.guidance_scale=1.5",
        f"train.output_dir={folder / 'teacher'}")
    return folder / "teacher" / "pipeline"


def test_a_progressive_distillation_killed_in_its_second_round_resumes_exactly(guided_teacher, tmp_path):
    """Two rounds (4 -> 2 -> 1 DDIM steps), killed after round 2's step-2 checkpoint: --resume keeps round 1 as it
    was and ends with the uninterrupted run's weights; the student samples with DDIM at 1 step, unguided."""
    from test_cli import assert_same_weights, final_weights

    common = ["train/distill.py", "--teacher", guided_teacher, "distill.method=progressive", "distill.start_steps=4",
              "distill.steps=1", "train.batch_size=4", "train.save_every=2", "train.sample_every=4",
              "train.max_steps=4"]
    straight, killed = run_together([*common, f"train.output_dir={tmp_path / 'straight'}"],
                                    ["tests/inject.py", "kill-after-save", "2/2", *common,
                                     f"train.output_dir={tmp_path / 'killed'}"], check=False)
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert killed.returncode == -9, killed.stderr[-2000:]
    round1 = tmp_path / "killed" / "rounds" / "2_steps" / "pipeline" / "stage_0" / "stage.json"
    written = round1.read_text()
    resumed, = run_together([*common, f"train.output_dir={tmp_path / 'killed'}", "--resume"])
    assert "round 1 of 2 (2 steps): done" in resumed.stdout and "(step 2)" in resumed.stdout + resumed.stderr
    assert round1.read_text() == written  # the finished round is not trained or exported again
    assert_same_weights(final_weights(tmp_path / "straight", 4), final_weights(tmp_path / "killed", 4),
                        "after SIGKILL in round 2 and --resume of a progressive distillation")
    student = Pipeline.from_pretrained(tmp_path / "straight" / "pipeline").stages[0]
    d = student.origin["distilled"]
    assert (d["method"], d["rounds"], d["round"], d["iterations"], d["guidance_scale"]) == ("progressive", [2, 1], 2,
                                                                                           8, 1.5)
    assert student.defaults.sampler == "ddim" and student.defaults.steps == 1 and student.network_evaluations() == 1
    assert not student.noise_scheduler.config.clip_sample  # trained for the unclipped DDIM step
    # --resume into a folder made with other settings is refused, naming the folder, before anything is trained
    proc = run_in_process(*common, "distill.guidance_scale=1.2", f"train.output_dir={tmp_path / 'straight'}",
                          "--resume", check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "rounds/2_steps holds another run" in last and "without --resume" in last
    proc = run_in_process("-m", "cascade", "info", tmp_path / "straight" / "pipeline")
    assert "distilled (progressive, rounds 4 -> 2 -> 1 steps, 8 iterations)" in proc.stdout
    images = student.sample(class_labels=[0, 1], seed=0, progress=False)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def killed_and_resumed(command: list, folder, step: int):
    """`command` run to its end into FOLDER/straight and, beside it, killed right after its step-`step`
    checkpoint into FOLDER/killed, then resumed there to its end (its process returned)."""
    straight, killed = run_together([*command, f"train.output_dir={folder / 'straight'}"],
                                    ["tests/inject.py", "kill-after-save", step, *command,
                                     f"train.output_dir={folder / 'killed'}"], check=False)
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed, = run_together([*command, f"train.output_dir={folder / 'killed'}", "--resume"])
    assert f"(step {step})" in resumed.stdout + resumed.stderr
    return resumed


def test_two_processes_distil_progressively_like_one_process_with_the_same_global_batch(tmp_path):
    """`accelerate launch` with 2 processes, batch 2 each, against 1 process with batch 4: both rounds train in one
    process group (it outlives each round's run), each round's line and export are printed once, and the students
    agree to float reduction order (the per-example draws are the same; 1e-2 of the last round's update). Dropout
    masks come from each process's own RNG, so the teacher (and so its student) has none."""
    from safetensors.torch import load_file

    from conftest import free_port

    run("train/base.py", "--config", "configs/base_tiny.yaml", "train.max_steps=3", "sample.guidance_scale=1.5",
        "model.dropout=0", f"train.output_dir={tmp_path / 'teacher'}")
    common = ["train/distill.py", "--teacher", tmp_path / "teacher" / "pipeline", "distill.method=progressive",
              "distill.start_steps=4",
              "distill.steps=1", "train.save_every=2", "train.sample_every=0", "train.max_steps=2"]
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    two, _ = run_together([*launch, *common, "train.batch_size=2", f"train.output_dir={tmp_path / 'two'}"],
                          [*common, "train.batch_size=4", f"train.output_dir={tmp_path / 'one'}"])
    log = two.stdout + two.stderr
    assert log.count("exported the EMA model") == 2 and log.count("--- stage 0") == 1, log[-3000:]
    assert (tmp_path / "two" / "checkpoints" / "step_00000002" / "rng_state_1.safetensors").is_file()  # 2 ranks
    one, two = (load_file(tmp_path / d / "checkpoints" / "step_00000002" / "model.safetensors") for d in ("one", "two"))
    start = Pipeline.from_pretrained(tmp_path / "one" / "rounds" / "2_steps" / "pipeline").stages[0].unet.state_dict()
    diff = torch.cat([(one[k] - two[k]).flatten() for k in one]).norm()
    update = torch.cat([(one[k] - start[k]).flatten() for k in one]).norm()
    assert diff < 0.01 * update, f"2 processes differ from 1 by {diff / update:.2%} of the last round's update"


def test_a_guided_base_stage_distils_with_its_guidance_baked_in_and_a_killed_run_resumes_exactly(guided_teacher,
                                                                                                   tmp_path):
    """train/distill.py on a tiny class-conditional teacher: the student samples unguided (1 evaluation per
    step) and records its teacher; killed after its step-3 checkpoint and resumed, it ends with the weights of
    the uninterrupted run."""
    from test_cli import assert_same_weights, final_weights

    common = ["train/distill.py", "--teacher", guided_teacher, "train.batch_size=4",
              "train.save_every=3", "train.sample_every=3", "train.max_steps=6"]
    killed_and_resumed(common, tmp_path, 3)
    assert_same_weights(final_weights(tmp_path / "straight", 6), final_weights(tmp_path / "killed", 6),
                        "after SIGKILL and --resume of a distillation")
    from safetensors.torch import load_file

    step6 = tmp_path / "killed" / "checkpoints" / "step_00000006"
    target, exported = load_file(step6 / "ema_target.safetensors"), load_file(step6 / "ema.safetensors")
    straight_target = load_file(tmp_path / "straight" / "checkpoints" / "step_00000006" / "ema_target.safetensors")
    assert all(torch.equal(target[k], straight_target[k]) for k in target)  # the target network resumed exactly too
    assert any(not torch.equal(target[k], exported[k]) for k in target)  # ... and it is not the exported EMA
    student = Pipeline.from_pretrained(tmp_path / "straight" / "pipeline").stages[0]
    record = json.loads((tmp_path / "straight" / "pipeline" / "stage_0" / "stage.json").read_text())
    assert student.defaults.sampler == "lcm" and student.defaults.steps == 4 and student.defaults.guidance_scale == 1
    assert record["origin"]["distilled"]["guidance_scale"] == 1.5 and record["origin"]["trained"]["steps"] == 3
    assert student.network_evaluations() == 4  # the teacher's 2 x its steps: guidance costs nothing now
    images = student.sample(class_labels=[0, 1], seed=0, progress=False)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_an_adversarial_student_adds_the_critics_hinge_term_and_the_critic_learns_apart():
    """With a critic (`distill.adversarial`), the student's loss is the consistency loss minus the weight times
    the critic's mean patch score of [f(x_t, t), the upsampled input], and no gradient of it reaches the critic;
    the critic's loss is the hinge loss on the same examples (real) and the student's f at them (fake), and
    none of its gradient reaches the student."""
    import copy

    from cascade.models.critic import PatchCritic, critic_condition, critic_input, make_critic

    teacher = tiny_stage(16, scale=2)
    student = copy.deepcopy(teacher.unet)
    critic, optimizer = make_critic(teacher, 1e-3)
    assert isinstance(critic, PatchCritic) and critic.in_channels == 6  # the output and the upsampled input
    batch = {"image": torch.rand(2, 3, 16, 16) * 2 - 1, "label": torch.zeros(2, dtype=torch.long),
             "seed": torch.tensor([3, 4])}
    plain = ConsistencyDistillation(teacher, student.config, "v_prediction", "data", target_net=teacher.unet)
    adversarial = ConsistencyDistillation(teacher, student.config, "v_prediction", "data", target_net=teacher.unet,
                                          critic=critic, adversarial=0.3)
    twin = copy.deepcopy(critic)  # the same power-iteration state (spectral norm updates it at each forward)
    loss = adversarial.loss(student, batch)
    real, fake, image, classes = adversarial.seen
    assert classes is None  # a class-free stage
    assert image is not None and image.shape == (2, 3, 16, 16)
    with torch.no_grad():
        expected = plain.loss(student, batch) - 0.3 * twin(torch.cat([fake, image], 1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    terms = adversarial.terms  # what the log shows beside the total: the consistency loss and the critic's score
    assert terms["consistency_loss"].item() == pytest.approx(plain.loss(student, batch).item(), rel=1e-5)
    assert loss.item() == pytest.approx((terms["consistency_loss"] - 0.3 * terms["critic_score"]).item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in critic.parameters())  # the student's term moves the student only
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.requires_grad for p in critic.parameters())  # given back to the critic's own step
    student.zero_grad()
    twin = copy.deepcopy(critic)
    hinge = adversarial.critic_loss(critic)
    with torch.no_grad():
        by_hand = (torch.relu(1 - twin(torch.cat([real, image], 1))).mean()
                   + torch.relu(1 + twin(torch.cat([fake, image], 1))).mean())
    assert hinge.item() == pytest.approx(by_hand.item(), rel=1e-5)
    hinge.backward()
    assert all(p.grad is None for p in student.parameters())  # the critic's loss never moves the student
    assert all(p.grad is not None for p in critic.parameters())
    assert critic_input(fake, None) is fake  # a stage without an input image: the critic sees the output alone
    maps = torch.tensor([[[[0, 2], [1, 3]]]])  # 3 labels and the null one
    one_hot = critic_condition({"label_map": maps, "cond_image": None}, 3)
    assert one_hot.shape == (1, 4, 2, 2) and torch.equal(one_hot.argmax(1), maps[:, 0])


def test_a_class_conditional_stages_critic_is_told_the_class_and_learns_what_it_alone_cannot_see():
    """A class-conditional stage's critic gets each example's class by projection: the student's term and the
    critic's loss pass the batch's classes; with them the critic learns to tell an image of its class from the
    same image with another class (which a class-free critic, seeing identical pixels, cannot); a class-free
    critic keeps its parameters (older checkpoints load) and each kind of critic refuses the other's call."""
    import copy

    from cascade.models.critic import PatchCritic, make_critic

    teacher = tiny_stage(16, num_classes=3)
    critic, _ = make_critic(teacher, 1e-3)
    assert critic.num_classes == 3 and critic.in_channels == 3  # the image alone; the class by projection
    objective = ConsistencyDistillation(teacher, teacher.unet.config, "v_prediction", "data",
                                        target_net=teacher.unet, critic=critic, adversarial=0.3)
    batch = {"image": torch.rand(2, 3, 16, 16) * 2 - 1, "label": torch.tensor([2, 0]), "seed": torch.tensor([3, 4])}
    twin = copy.deepcopy(critic)
    loss = objective.loss(copy.deepcopy(teacher.unet), batch)
    real, fake, given, classes = objective.seen
    assert given is None and torch.equal(classes, batch["label"])  # never the null class: labels are not dropped
    with torch.no_grad():
        assert loss.item() == pytest.approx((objective.terms["consistency_loss"]
                                             - 0.3 * twin(fake, classes).mean()).item(), rel=1e-5)
        twin.eval()  # no power iteration: only the class differs between the next two calls
        swapped = twin(fake, torch.tensor([1, 1]))
        assert not torch.allclose(swapped, twin(fake, classes))  # the class moves the score
    assert "class_embed" not in "".join(PatchCritic(3).state_dict())  # a class-free critic: as before
    with pytest.raises(ValueError, match="without class labels"):
        critic(fake)
    with pytest.raises(ValueError, match="with class labels"):
        PatchCritic(3)(fake, classes)

    # what projection adds: real = (red, 0), (blue, 1); fake = the same pixels with the classes swapped
    torch.manual_seed(0)
    images = torch.zeros(2, 3, 8, 8)
    images[0, 0], images[1, 2] = 1, 1
    labels = torch.tensor([0, 1])
    for num_classes in (2, 0):
        critic = PatchCritic(3, width=8, num_classes=num_classes)
        optimizer = torch.optim.AdamW(critic.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=0.0)
        real_labels, fake_labels = (labels, 1 - labels) if num_classes else (None, None)
        for _ in range(100):
            hinge = (torch.relu(1 - critic(images, real_labels)).mean()
                     + torch.relu(1 + critic(images, fake_labels)).mean())
            optimizer.zero_grad()
            hinge.backward()
            optimizer.step()
        critic.eval()  # no power iteration: two calls on the same input give the same scores
        with torch.no_grad():
            margin = (critic(images, real_labels).mean() - critic(images, fake_labels).mean()).item()
        if num_classes:
            assert margin > 1.0, margin  # real scored above fake by more than the hinge's margin of 2 halved
        else:
            assert margin == 0.0  # identical inputs: no class-free critic can tell them apart


def test_an_adversarial_distillation_killed_mid_way_resumes_exactly_critic_included(tmp_path):
    """train/distill.py with a critic on a tiny SR3 teacher, killed after its step-2 checkpoint and resumed,
    ends with the uninterrupted run's student, EMA and critic (Accelerate's second model in the checkpoint),
    and the student records the critic's weight; with progressive distillation a critic is refused."""
    from safetensors.torch import load_file

    from test_cli import assert_same_weights, final_weights

    run_in_process("train/sr3.py", "--config", "configs/sr3_tiny.yaml", "train.max_steps=2", "sr.residual=true",
                   f"train.output_dir={tmp_path / 'teacher'}")
    common = ["train/distill.py", "--teacher", tmp_path / "teacher" / "pipeline", "distill.adversarial=0.2",
              "train.batch_size=4", "train.save_every=2", "train.sample_every=4", "train.max_steps=4"]
    resumed = killed_and_resumed(common, tmp_path, 2)
    bar = resumed.stderr.replace("\r", "\n").splitlines()
    assert any("critic=" in line and "consistency=" in line and "critic_score=" in line for line in bar)  # the terms
    a, b = final_weights(tmp_path / "straight", 4), final_weights(tmp_path / "killed", 4)
    for run_dir, weights in ((tmp_path / "straight", a), (tmp_path / "killed", b)):
        weights["critic"] = load_file(run_dir / "checkpoints" / "step_00000004" / "model_1.safetensors")
    assert any(k.endswith("original") for k in a["critic"])  # the spectral-normalised critic's weights
    assert_same_weights(a, b, "after SIGKILL and --resume of an adversarial distillation")
    first = load_file(tmp_path / "straight" / "checkpoints" / "step_00000002" / "model_1.safetensors")
    weights = [k for k in first if k.endswith(("original", "bias"))]  # not the power iteration's vectors
    assert any(not torch.equal(first[k], a["critic"][k]) for k in weights)  # the critic's optimizer steps
    student = Pipeline.from_pretrained(tmp_path / "straight" / "pipeline").stages[0]
    assert student.origin["distilled"]["adversarial"] == 0.2 and student.defaults.sampler == "lcm"
    proc = run_in_process("-m", "cascade", "info", tmp_path / "straight" / "pipeline")
    assert "distilled (consistency, target teacher, critic at 0.2, 4 iterations)" in proc.stdout
    # --resume without the critic the run has is refused before anything loads, naming the setting
    proc = run_in_process(*common, "distill.adversarial=0", f"train.output_dir={tmp_path / 'killed'}", "--resume",
                          check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "written by a run with a critic" in last and "distill.adversarial" in last
    proc = run_in_process("train/distill.py", "--teacher", tmp_path / "teacher" / "pipeline",
                          "distill.method=progressive", "distill.adversarial=0.2",
                          f"train.output_dir={tmp_path / 'progressive'}", check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "adversarial" in last and "consistency" in last


def test_a_phased_students_jumps_are_what_its_sampler_takes(tmp_path):
    """distill.phases (PCM): the phases' edges are the timesteps the pcm sampler takes, then t = 0; f maps a grid
    point to its phase's lower edge, and each step of the pcm sampler (diffusers' TCDScheduler at gamma 0 is the
    reference) lands exactly where f does; the loss pulls f(x_t) to f(x_prev) at the same edge, x_prev itself
    where the teacher's step lands on the edge; the config refuses phases that its sampler would not step to."""
    import copy

    from diffusers import TCDScheduler

    from cascade.diffusion import rng
    from cascade.training.distill import phase_edges

    teacher = tiny_stage(16, scale=2)
    config = student_schedule(teacher).config
    edges = phase_edges(config, 4)
    lcm = LCMScheduler(**{k: config[k] for k in ("num_train_timesteps", "beta_schedule", "prediction_type")})
    lcm.set_timesteps(4)
    assert edges.tolist() == lcm.timesteps.tolist() + [0] == [999, 759, 499, 259, 0]
    assert phase_edges(config, 4, final_timestep=99).tolist() == [999, 759, 499, 99, 0]
    student = copy.deepcopy(teacher.unet)
    objective = ConsistencyDistillation(teacher, student.config, "v_prediction", "teacher", edges=edges)
    below = [max(e for e in edges.tolist() if e < t) for t in grid(1000).tolist()]
    assert objective.boundary(grid(1000)).tolist() == below  # 19..259 -> 0, 279..499 -> 259, ..., 779..999 -> 759
    # the sampler's steps are f's jumps, through every phase
    low = torch.rand(2, 3, 8, 8) * 2 - 1
    cond = {"cond_image": torch.nn.functional.interpolate(low, scale_factor=2), "aug_level": torch.zeros(2)}
    ours, reference = make_sampler("pcm", config), TCDScheduler(**{k: config[k] for k in ("num_train_timesteps",
                                                                                           "beta_schedule",
                                                                                           "prediction_type")})
    ours.set_timesteps(4), reference.set_timesteps(4)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in ours.timesteps:
            t_batch = torch.full((2,), int(t))
            jumped, _ = objective.consistency(student, x, t_batch, cond, objective.boundary(t_batch))
            v = student(x, t_batch, **cond)
            stepped, expected = ours.step(v, t, x).prev_sample, reference.step(v, t, x, eta=0.0).prev_sample
            assert torch.equal(stepped, expected)
            assert torch.allclose(jumped, stepped, atol=1e-5)
            x = stepped
    # the loss, by hand (the same draws): the target is x_prev itself where the teacher's step lands on the edge,
    # elsewhere f of the student (under stop-gradient) at the grid point below, jumping to the same edge
    n = 48
    batch = {"image": torch.rand(n, 3, 16, 16) * 2 - 1, "label": torch.zeros(n, dtype=torch.long),
             "seed": torch.arange(48, 48 + n)}  # seeds whose draws land on three edges: 19 -> 0, 279 -> 259, 519
    objective.eta = 0.0
    generators = rng.example_generators(batch["seed"])
    x0, cond = objective.kind.training_inputs(student.config, batch["image"], objective.alphas_cumprod.float(),
                                              generators)
    t = objective.grid[rng.randint(GRID_POINTS, n, generators)]
    t_prev = (t - 20).clamp(min=0)
    s = torch.tensor([max(e for e in edges.tolist() if e < u) for u in t.tolist()])
    on_edge = t_prev == s
    assert set(t[on_edge].tolist()) == {19, 279, 519} and not on_edge.all()  # both cases drawn
    noise = rng.randn(x0.shape, generators)
    a, a_prev, a_s = (objective.alphas_cumprod[u].view(-1, 1, 1, 1).float() for u in (t, t_prev, s))

    def jump(x, a, u):
        x0_hat = a.sqrt() * x - (1 - a).sqrt() * student(x, u, **cond)
        return a_s.sqrt() * x0_hat + (1 - a_s).sqrt() * (x - a.sqrt() * x0_hat) / (1 - a).sqrt()

    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    with torch.no_grad():
        x0_t = a.sqrt() * x_t - (1 - a).sqrt() * teacher.unet(x_t, t, **cond)  # DDIM: eps from the unclipped x0
        x_prev = a_prev.sqrt() * x0_t.clamp(-1, 1) + (1 - a_prev).sqrt() * (x_t - a.sqrt() * x0_t) / (1 - a).sqrt()
        target = torch.where(on_edge.view(-1, 1, 1, 1), x_prev, jump(x_prev, a_prev, t_prev))
        d = jump(x_t, a, t) - target
    assert objective.loss(student, batch).item() == pytest.approx(((d ** 2 + 1e-6).sqrt() - 1e-3).mean().item(),
                                                                  rel=1e-5)
    # with a critic, it judges the student's clean estimate (a phased f is a noisy sample at its edge)
    from cascade.models.critic import make_critic

    objective.critic, objective.adversarial = make_critic(teacher, 2e-4)[0], 0.1
    objective.loss(student, batch)
    with torch.no_grad():
        x0_hat = a.sqrt() * x_t - (1 - a).sqrt() * student(x_t, t, **cond)
    assert torch.allclose(objective.seen[1], x0_hat, atol=1e-5) and torch.equal(objective.seen[0], x0)
    # the config: phases are the student's steps, with the sampler that steps to them
    folder = tmp_path / "t"
    for keys, key in ((["distill.phases=2"], "phases"), (["distill.phases=4", "distill.sampler=lcm"], "sampler"),
                      (["distill.phases=4", "distill.method=progressive"], "phases")):
        proc = run_in_process("train/distill.py", "--teacher", folder, *keys, check=False)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and key in last, last


@pytest.fixture(scope="module")
def sr_student(tmp_path_factory):
    """A tiny SR3 teacher (residual, the demo's kind of stage) and its student, 4 steps each."""
    folder = tmp_path_factory.mktemp("distil")
    run_in_process("train/sr3.py", "--config", "configs/sr3_tiny.yaml", "train.max_steps=4", "sr.residual=true",
                   "sample.consistent=true", f"train.output_dir={folder / 'teacher'}")
    run_in_process("train/distill.py", "--teacher", folder / "teacher" / "pipeline", "distill.target=data",
                   "train.max_steps=4", "train.batch_size=4", f"train.output_dir={folder / 'student'}")
    return folder


def test_a_student_samples_through_every_path_a_stage_does(sr_student, tmp_path):
    pipe = Pipeline.from_pretrained(sr_student / "student" / "pipeline")
    stage = pipe.stages[0]
    assert stage.kind.residual and stage.defaults.consistent and stage.defaults.sampler == "lcm"
    low = torch.rand(2, 3, 12, 20) * 2 - 1
    whole = stage.sample(low, seed=0, progress=False)
    assert whole.shape == (2, 3, 24, 40)
    from cascade.diffusion.resize import downsample

    assert (downsample(whole.double(), 2) - low.double()).abs().max() < 1e-5  # exact consistency, as the teacher's
    tiled = stage.sample(low, seed=0, tiling=Tiling(16, overlap=4), progress=False)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    edited = stage.sample(low, seed=0, init=whole, strength=0.0, progress=False)
    assert torch.allclose(edited, whole, atol=1e-5)  # SDEdit at strength 0 returns its init
    for steps in (1, 2, 8):
        assert stage.sample(low, seed=0, settings={"steps": steps}, progress=False).shape == whole.shape
    photo = Image.fromarray((np.random.default_rng(0).random((20, 28, 3)) * 255).astype(np.uint8))
    report = upscale_to_file(pipe, photo, tmp_path / "big.png", tile_size=16, progress=False)
    assert report["size"] == [56, 40] and Image.open(tmp_path / "big.png").size == (56, 40)
    photo.save(tmp_path / "in.png")
    run_in_process("-m", "cascade", "upscale", tmp_path / "in.png", tmp_path / "out.png", "--pipeline",
                   sr_student / "student" / "pipeline")
    assert Image.open(tmp_path / "out.png").size == (56, 40)
    proc = run_in_process("-m", "cascade", "info", sr_student / "student" / "pipeline")
    assert "lcm x4" in proc.stdout  # the default critic (0.03) shows in its origin:
    assert "distilled (consistency, target data, critic at 0.03, 4 iterations)" in proc.stdout


def test_a_phased_student_is_written_with_the_sampler_that_takes_its_jumps(sr_student, tmp_path):
    """`distill.phases`: the student's stage.json samples with pcm at its phases' count, its origin records the
    phases' edges, it samples through the stage's paths (a warning when off its edges), and `info` says how it was
    made."""
    run_in_process("train/distill.py", "--teacher", sr_student / "teacher" / "pipeline", "distill.phases=2",
                   "distill.steps=2", "distill.adversarial=0", "train.max_steps=2",
                   "train.batch_size=4", f"train.output_dir={tmp_path / 'phased'}")
    stage = Pipeline.from_pretrained(tmp_path / "phased" / "pipeline").stages[0]
    assert (stage.defaults.sampler, stage.defaults.steps) == ("pcm", 2)
    d = stage.origin["distilled"]
    assert (d["phases"], d["phase_edges"], d["eta"]) == (2, [999, 499, 0], 0.0)
    assert stage.timesteps() == [999, 499]  # the sampler steps to the edges it learned to jump to
    with warnings.catch_warnings():  # on its edges: no warning; off them (another sampler, count or end): one each
        warnings.simplefilter("error")
        stage.settings({"steps": 2, "final_timestep": 999})
    for settings, said in (({"sampler": "lcm"}, "lcm is not its sampler (pcm at 2 steps, timesteps [999, 499])"),
                           ({"steps": 4}, "pcm at 4 steps takes timesteps [999, 759, 499, 259], not its edges"),
                           ({"final_timestep": 99}, "pcm at 2 steps takes timesteps [999, 99], not its edges")):
        with pytest.warns(UserWarning, match=re.escape(said)):
            stage.settings(settings)
    with warnings.catch_warnings():  # an origin that records no phases (hand-written, or none at all): no warning
        warnings.simplefilter("error")
        for origin in ({"distilled": None}, {"distilled": {"phase_edges": "999, 0"}}, {"distilled": {"phases": 2}}):
            Stage(stage.unet, stage.noise_scheduler, stage.kind, stage.defaults.replace({"sampler": "lcm"}),
                  origin=origin).settings({"steps": 4})
    low = torch.rand(1, 3, 12, 12) * 2 - 1
    out = stage.sample(low, seed=0, progress=False)
    assert torch.isfinite(out).all() and torch.equal(out, stage.sample(low, seed=0, progress=False))
    tiled = stage.sample(low, seed=0, tiling=Tiling(16, overlap=4), progress=False)
    assert tiled.shape == out.shape and torch.isfinite(tiled).all()
    proc = run_in_process("-m", "cascade", "info", tmp_path / "phased" / "pipeline")
    assert "pcm x2" in proc.stdout and "target teacher, 2 phases, 2 iterations" in proc.stdout
    proc = run_in_process("train/distill.py", "--teacher", sr_student / "teacher" / "pipeline", "distill.phases=2",
                          "distill.steps=2", "distill.final_timestep=100", f"train.output_dir={tmp_path / 'off'}",
                          check=False)  # a last edge off the grid: one line, before the run folder
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and "distill: final_timestep=100 is not on the students' grid" in last, last
    assert not (tmp_path / "off").exists()


def test_a_students_steps_can_end_lower_on_its_grid(sr_student, tmp_path):
    """`final_timestep` (a sampling setting): LCM's and TCD's 2+ steps end at that grid point instead of their own
    last one (diffusers' own schedulers given the same list are the reference); 1 step, a higher point and the
    teachers' samplers are unchanged; a point off the students' grid is refused; the student evaluates its network
    at those timesteps, through every stage path, and the setting is kept in stage.json."""
    from diffusers import TCDScheduler

    config = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction",
              "clip_sample": False}
    for name, cls in (("lcm", LCMScheduler), ("tcd", TCDScheduler)):
        for steps in (2, 4, 8):
            ours, own = make_sampler(name, config, final_timestep=99), make_sampler(name, config)
            ours.set_timesteps(steps)
            own.set_timesteps(steps)
            reference = cls(beta_schedule="squaredcos_cap_v2")
            reference.set_timesteps(timesteps=own.timesteps.tolist()[:-1] + [99])
            assert ours.timesteps.tolist() == reference.timesteps.tolist() and ours.timesteps[-1] == 99
    one, late = make_sampler("lcm", config, final_timestep=99), make_sampler("lcm", config, final_timestep=399)
    one.set_timesteps(1)
    late.set_timesteps(4)
    assert one.timesteps.tolist() == [999] and late.timesteps.tolist() == [999, 759, 499, 259]
    teacher, plain = make_sampler("dpm++", config, final_timestep=99), make_sampler("dpm++", config)
    teacher.set_timesteps(4)
    plain.set_timesteps(4)
    assert teacher.timesteps.tolist() == plain.timesteps.tolist()
    with pytest.raises(ValueError, match="final_timestep=100 is not on the students' grid t = 20 n - 1"):
        make_sampler("lcm", config, final_timestep=100)

    pipe = Pipeline.from_pretrained(sr_student / "student" / "pipeline")
    stage = pipe.stages[0]
    seen = []
    forward = stage.unet.forward
    stage.unet.forward = lambda x, t, **cond: (seen.append(int(t.flatten()[0])), forward(x, t, **cond))[1]
    low = torch.rand(1, 3, 12, 20) * 2 - 1
    stage.sample(low, seed=0, settings={"final_timestep": 99}, progress=False)
    assert seen == [999, 759, 499, 99]
    seen.clear()
    stage.sample(low, seed=0, settings={"final_timestep": 99}, tiling=Tiling(16, overlap=4), progress=False)
    assert sorted(set(seen), reverse=True) == [999, 759, 499, 99]
    assert stage.network_evaluations({"final_timestep": 99}) == 4
    with pytest.raises(ValueError, match="final_timestep"):
        stage.sample(low, seed=0, settings={"final_timestep": -1}, progress=False)
    base = tiny_stage(stage.input_resolution)  # off the grid for a later stage of a call: refused before any runs
    base.unet.forward = lambda *a, **k: seen.append("base")
    with pytest.raises(ValueError, match="^stage 1: final_timestep=100 is not on the students' grid"):
        Pipeline([base, stage])(num_images=1, settings={1: {"final_timestep": 100}}, progress=False)
    assert "base" not in seen
    stage.unet.forward = forward
    stage.defaults = stage.defaults.replace({"final_timestep": 100})  # by hand, unchecked: not saved
    with pytest.raises(ValueError, match="^sample: final_timestep=100"):
        stage.save_pretrained(tmp_path / "never")
    assert not list(tmp_path.glob("never*"))
    stage.defaults = stage.defaults.replace({"final_timestep": 99})
    pipe.save_pretrained(tmp_path / "late")
    assert Pipeline.from_pretrained(tmp_path / "late").stages[0].defaults.final_timestep == 99
    photo = Image.fromarray((np.random.default_rng(0).random((12, 20, 3)) * 255).astype(np.uint8))
    photo.save(tmp_path / "in.png")
    common = ["-m", "cascade", "upscale", tmp_path / "in.png", tmp_path / "out.png", "--pipeline", tmp_path / "late"]
    bad = run_in_process(*common, "--final-timestep", "100", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: stage 0: final_timestep=100 is not on the students' grid t = 20 n - 1 (19, 39, ..., 999)")
    assert not (tmp_path / "out.png").exists()
    run_in_process(*common, "--final-timestep", "0=19")
    assert Image.open(tmp_path / "out.png").size == (40, 24)
    # the steps it takes show in `cascade info` and in the model card
    assert "t = 999, 759, 499, 99 (4 NFE)" in run_in_process("-m", "cascade", "info", tmp_path / "late").stdout
    assert "t = 999, 759, 499, 99 | 4 |" in (tmp_path / "late" / "README.md").read_text()
    # off the grid in a stage.json (edited by hand): refused when the folder loads, naming it, before any output
    record = tmp_path / "late" / "stage_0" / "stage.json"
    record.write_text(record.read_text().replace('"final_timestep": 99', '"final_timestep": 100'))
    with pytest.raises(CheckpointError, match=r"stage_0: sample: final_timestep=100 is not on the students' grid"):
        Pipeline.from_pretrained(tmp_path / "late")
    bad = run_in_process(*common[:4], tmp_path / "out2.png", *common[5:], check=False)
    assert bad.returncode == 2 and "stage_0: sample: final_timestep=100" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out2.png").exists()
    # and as distill.final_timestep: refused before any data or training
    bad = run_in_process("train/distill.py", "--teacher", sr_student / "teacher" / "pipeline", "train.max_steps=1",
                         "distill.final_timestep=100", f"train.output_dir={tmp_path / 'off'}", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: distill: final_timestep=100 is not on the students' grid t = 20 n - 1 (19, 39, ..., 999)")
    assert not (tmp_path / "off").exists()


def test_a_one_shot_cascade_distils_every_stage(tmp_path):
    """train/distill.py on a tiny one-shot cascade, with a critic (the scene's judges the image beside its row
    positions, the upsamplers' beside their input): each stage rebuilds its photo's crops from its recipe, and the
    student cascade generates at any size, as its teacher does."""
    from test_one_shot import TINY, photo

    from cascade.inference import one_shot

    image = photo(tmp_path / "coffee.png")
    run_in_process("train/one_shot.py", "--image", image, f"output_dir={tmp_path / 'teacher'}", *TINY)
    run_in_process("train/distill.py", "--teacher", tmp_path / "teacher" / "pipeline", "train.max_steps=2",
                   "train.batch_size=2", "distill.adversarial=0.1", f"train.output_dir={tmp_path / 'student'}")
    student = Pipeline.from_pretrained(tmp_path / "student" / "pipeline")
    assert [s.kind.name for s in student.stages] == ["scene", "one_shot_sr3", "one_shot_sr3"]
    assert all(s.origin["distilled"]["adversarial"] == 0.1 for s in student.stages)  # a critic for each kind
    assert all(s.defaults.sampler == "lcm" and "distilled" in s.origin for s in student.stages)
    assert (tmp_path / "student" / "pipeline" / "one_shot.json").is_file()
    teacher = Pipeline.from_pretrained(tmp_path / "teacher" / "pipeline")
    assert torch.equal(one_shot.recorded_rows(student), one_shot.recorded_rows(teacher))  # it keeps the photo's rows
    assert one_shot.generate(student, (60, 40), seed=0, progress=False).size == (60, 40)


def test_a_teacher_without_a_recorded_data_source_needs_one(tmp_path):
    teacher = tiny_stage(16, scale=2)
    Pipeline([teacher]).save_pretrained(tmp_path / "old")
    proc = run_in_process("train/distill.py", "--teacher", tmp_path / "old", f"train.output_dir={tmp_path / 's'}",
                          check=False)
    assert proc.returncode == 2 and "the teacher records no training data" in proc.stderr.strip().splitlines()[-1]
    sampler = make_sampler("lcm", teacher.noise_scheduler.config)
    sampler.set_timesteps(4)
    assert sampler.timesteps.tolist() == [999, 759, 499, 259]


def test_bench_distill_writes_every_row_and_merges_other_rows_and_seeds(sr_student, tmp_path):
    teacher, student = sr_student / "teacher" / "pipeline", sr_student / "student" / "pipeline"
    common = ["eval/bench_distill.py", "--teacher", teacher, "--student", f"s={student}", "--regression", teacher,
              "--num", "2", "--nfe", "1", "--diversity-crops", "2", "--batch-size", "2", "--reference-steps", "0",
              "--out", tmp_path / "sr"]
    defaults = Pipeline.from_pretrained(teacher).stages[0].defaults
    preset = f"teacher preset ({defaults.sampler} {defaults.steps})"
    rows = [preset, "teacher ddim 1", "student s 1", "regression", "bicubic"]  # of every row: the kinds of row
    run_in_process(*common, "--seeds", "0", "--rows", *rows)
    first = json.loads((tmp_path / "sr.json").read_text())["rows"]["runs"]
    assert list(first["0"]) == rows
    got = first["0"]
    assert got[preset]["diversity"] == 1 and got["bicubic"]["diversity"] == 0 and got["student s 1"]["nfe"] == 1
    assert (tmp_path / "sr.png").is_file() and "| student s 1 | 1 |" in (tmp_path / "sr.md").read_text()
    # two rows on two seeds, the student under another name: merged, every earlier row kept (student s too)
    run_in_process(*common[:4], f"t={student}", *common[5:], "--seeds", "0", "1", "--rows", preset, "teacher ddim 1")
    again = json.loads((tmp_path / "sr.json").read_text())["rows"]["runs"]
    assert list(again["0"]) == [r for r in rows if r != "student s 1"] + ["student s 1"]  # not named: kept, last
    assert again["0"]["student s 1"] == first["0"]["student s 1"]
    assert again["0"]["teacher ddim 1"]["psnr_y"] == first["0"]["teacher ddim 1"]["psnr_y"]  # reproduced
    assert list(again["1"]) == [preset, "teacher ddim 1"]
    # a student's rows ending at another grid point (--final-timesteps): the same network evaluations, other images
    late = ["student s 2", "student s 2, final t=19"]
    two_steps = [a if a != "1" else "2" for a in common]
    run_in_process(*two_steps, "--final-timesteps", "19", "--seeds", "0", "--rows", *late)
    rows2 = json.loads((tmp_path / "sr.json").read_text())["rows"]["runs"]["0"]
    assert rows2[late[0]]["nfe"] == rows2[late[1]]["nfe"] == 2 and rows2[late[0]]["psnr_y"] != rows2[late[1]]["psnr_y"]
    # a column not computed for a row (the many-step reference's diversity: nan on every seed) reads "–"
    bench = load_script("eval/bench_distill.py")
    runs = {seed: {"r": {**rows2[late[0]], "diversity": float("nan")}} for seed in ("0", "1")}
    cells = bench.table(runs).splitlines()[-1].split(" | ")
    assert cells[[title for _, title, _ in bench.COLUMNS].index("diversity") + 1] == "–" and "nan" not in cells


def test_a_regression_teacher_is_refused(tmp_path):
    teacher = tiny_stage(16, scale=2)
    from cascade.kinds.sr3 import Regression

    regression = type(teacher)(teacher.unet, teacher.noise_scheduler, Regression(scale=2))
    Pipeline([regression]).save_pretrained(tmp_path / "reg")
    proc = run_in_process("train/distill.py", "--teacher", tmp_path / "reg", f"train.output_dir={tmp_path / 's'}",
                          check=False)
    assert proc.returncode == 2 and "nothing to distil" in proc.stderr.strip().splitlines()[-1]
