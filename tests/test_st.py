"""ST, the State Transition model (vcell_lib.models.st): shapes, set equivariance, training, parity with arc-state."""

import contextlib
import io
import itertools
import warnings

import pytest
import torch

from vcell_lib.models import st
from vcell_lib.models.layers import LlamaEncoder
from vcell_lib.models.losses import energy_distance

N_GENES, PERT_DIM, SETS, CELLS = 32, 6, 3, 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def inputs(seed=0, n_sets=SETS, n_cells=CELLS, n_batches=0):
    generator = torch.Generator().manual_seed(seed)
    basal = torch.log1p(torch.poisson(torch.full((n_sets, n_cells, N_GENES), 2.0), generator=generator))
    pert = torch.eye(PERT_DIM)[torch.randint(PERT_DIM, (n_sets,), generator=generator)]
    pert = pert[:, None].expand(-1, n_cells, -1)  # one perturbation per set, the same row for each of its cells
    batch = torch.randint(n_batches, (n_sets, n_cells), generator=generator) if n_batches else None
    return basal, pert, batch


def tiny(**changes):
    torch.manual_seed(0)
    return st.StateTransition(st.STConfig.tiny(N_GENES, PERT_DIM, **changes)).eval()


@pytest.mark.parametrize("output_space", ["all", "gene"])
def test_shapes_and_outputs_are_expression(output_space):
    model = tiny(output_space=output_space, n_batches=3, basal_mlp=True)
    basal, pert, batch = inputs(n_batches=3)
    with torch.no_grad():
        out = model(basal, pert, batch)
    assert out.shape == (SETS, CELLS, N_GENES)
    assert (out >= 0).all()  # the final ReLU
    assert model(basal[:, :5], pert[:, :5], batch[:, :5]).shape == (SETS, 5, N_GENES)  # any set size
    assert hasattr(model, "final_down_then_up") == (output_space == "all")
    config = st.STConfig.state_sm(18080, 5120)
    assert (config.hidden_dim, config.n_layers, config.n_heads, config.ffn_dim) == (672, 4, 8, 2688)
    assert (config.cell_set_len, config.basal_mlp, config.output_space) == (128, False, "all")


def test_permuting_the_cells_permutes_the_predictions():
    model = tiny(n_batches=2)
    basal, pert, batch = inputs(n_batches=2)
    order = torch.randperm(CELLS)
    with torch.no_grad():
        out = model(basal, pert, batch)
        permuted = model(basal[:, order], pert[:, order], batch[:, order])
        changed = basal.clone()
        changed[:, 0] += 1.0  # one cell of each set changes...
        other = model(changed, pert, batch)
    assert torch.allclose(permuted, out[:, order], atol=1e-5)
    assert not torch.equal(permuted, out)  # the order did change
    assert (other[:, 1:] - out[:, 1:]).abs().max() > 1e-4  # ...and the others' predictions move: cells attend


def test_inputs_are_checked():
    model = tiny(n_batches=2)
    basal, pert, batch = inputs(n_batches=2)
    with pytest.raises(ValueError, match="pass batch of shape"):
        model(basal, pert)
    with pytest.raises(ValueError, match="pert must have shape"):
        model(basal, pert[:, 0], batch)
    with pytest.raises(ValueError, match="basal must have shape"):
        model(basal[..., :5], pert, batch)
    with pytest.raises(ValueError, match="no batch embedding"):
        tiny()(basal, pert, batch)
    with pytest.raises(ValueError, match="divisible"):
        st.STConfig.tiny(N_GENES, PERT_DIM, n_heads=3)
    with pytest.raises(ValueError, match="output_space"):
        st.STConfig.tiny(N_GENES, PERT_DIM, output_space="embedding")


def test_loss_is_the_mean_energy_distance_over_sets_or_mse():
    model = tiny()
    basal, pert, _ = inputs()
    target, _, _ = inputs(seed=1)
    loss = model.loss(basal, target)
    assert torch.allclose(loss, energy_distance(basal, target).mean())
    assert loss > 0.1 and model.loss(basal, basal.clone()).abs() < 1e-6
    assert torch.allclose(model.loss(basal, target), model.loss(target, basal), atol=1e-6)
    assert torch.allclose(model.loss(basal, target[:, torch.randperm(CELLS)]), loss, atol=1e-6)  # sets, not pairs
    mse = tiny(loss="mse")
    assert torch.allclose(mse.loss(basal, target), ((basal - target) ** 2).mean())
    with pytest.raises(ValueError, match="same shape"):
        model.loss(basal, target[:, :4])


# "all" fits more slowly: every cell's output passes the G/8 = 4-wide bottleneck, and genes whose output starts
# below zero everywhere (about a third, behind the final ReLU) get no gradient and seldom come back through it.
@pytest.mark.parametrize(("output_space", "factor"), [("all", 4), ("gene", 20)])
def test_a_tiny_model_overfits_a_tiny_batch(output_space, factor):
    torch.manual_seed(0)
    model = tiny(output_space=output_space).train()
    basal, pert, _ = inputs(n_sets=2)
    genes = torch.linspace(-1, 2, N_GENES)
    target = torch.relu(basal.mean(-1, keepdim=True) * genes.flip(0) + genes * pert[..., :1])  # depends on pert
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = model.loss(model(basal, pert), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / factor, (losses[0], losses[-1])


# --- parity with arc-state -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def arc():
    """arc-state's model class and its Llama backbone builder (importing arc-state takes several seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from state.tx.models.state_transition import StateTransitionPerturbationModel
        from state.tx.models.utils import get_transformer_backbone
    return StateTransitionPerturbationModel, get_transformer_backbone


def llama_kwargs(hidden=32, layers=2, heads=4, ffn=64, cells=CELLS):
    """state_sm.yaml's transformer_backbone_kwargs, at a small size."""
    return dict(
        bidirectional_attention=True, max_position_embeddings=cells, hidden_size=hidden, intermediate_size=ffn,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads,
        use_cache=False, attention_dropout=0.0, hidden_dropout=0.0, layer_norm_eps=1e-6, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, rotary_dim=0, use_rotary_embeddings=False,
        vocab_size=8,  # the token table is never used; keep it small
    )  # fmt: skip


def randomize(module):
    """Move every weight away from its initial value (RMSNorm gains start at one, which would hide a swap)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))


def test_llama_encoder_is_arcs_bidirectional_llama(arc):
    _, get_transformer_backbone = arc
    hugging_face, _ = get_transformer_backbone("llama", llama_kwargs())
    randomize(hugging_face)
    ours = LlamaEncoder(32, 4, 64, 2)
    ours.load_state_dict({k: v for k, v in hugging_face.state_dict().items() if k != "embed_tokens.weight"})
    x = torch.randn(3, 7, 32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hugging_face.eval()(inputs_embeds=x).last_hidden_state
        largest = (ours.eval()(x) - theirs).abs().max().item()
    print(f"largest difference from Hugging Face's Llama (arc-state's bidirectional one): {largest:.2e}")
    assert largest < 1e-5


# output space, basal MLP, batches, residual
OPTIONS = [(*options, True) for options in itertools.product(["all", "gene"], [False, True], [0, 3])]
OPTIONS += [("all", False, 0, False), ("gene", True, 3, False)]


@pytest.mark.parametrize(("output_space", "basal_mlp", "n_batches", "residual"), OPTIONS)
def test_st_matches_arc_state(arc, tmp_path, output_space, basal_mlp, n_batches, residual):
    """A checkpoint of arc-state's StateTransitionPerturbationModel, loaded into the book's ST, predicts the same."""
    model_class, _ = arc
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # arc-state prints the model
        warnings.simplefilter("ignore")
        theirs = model_class(
            input_dim=N_GENES, hidden_dim=32, output_dim=N_GENES, pert_dim=PERT_DIM, gene_dim=N_GENES,
            batch_dim=n_batches or None, batch_encoder=bool(n_batches), embed_key=None, output_space=output_space,
            cell_set_len=CELLS, n_encoder_layers=4, n_decoder_layers=4, use_basal_projection=basal_mlp,
            gene_decoder_bool=False, loss="energy", distributional_loss="energy", predict_residual=residual,
            transformer_backbone_key="llama", transformer_backbone_kwargs=llama_kwargs(),
        )  # fmt: skip
    randomize(theirs)
    theirs.eval()
    torch.save({"state_dict": theirs.state_dict(), "hyper_parameters": dict(theirs.hparams)}, tmp_path / "st.ckpt")

    ours = st.load_arc_checkpoint(tmp_path / "st.ckpt")
    c = ours.config
    assert (c.n_genes, c.hidden_dim, c.n_layers, c.n_heads, c.ffn_dim) == (N_GENES, 32, 2, 4, 64)
    assert (c.output_space, c.basal_mlp, c.n_batches, c.cell_set_len) == (output_space, basal_mlp, n_batches, CELLS)
    assert c.residual == residual and not ours.training

    basal, pert, batch = inputs(n_batches=n_batches)
    arc_batch = {"ctrl_cell_emb": basal.reshape(-1, N_GENES), "pert_emb": pert.reshape(-1, PERT_DIM)}
    if n_batches:
        arc_batch["batch"] = batch.reshape(-1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(arc_batch).reshape(SETS, CELLS, N_GENES)
        predicted = ours(basal, pert, batch)
    assert (expected > 0).float().mean() > 0.2  # not all clipped to zero by the ReLU: the comparison means something
    largest = (predicted - expected).abs().max().item()
    print(f"largest difference from arc-state ({output_space}, basal MLP {basal_mlp}, {n_batches} batches, "
          f"residual {residual}): "
          f"{largest:.2e}")  # fmt: skip
    assert largest < 1e-5


def test_st_on_embeddings_with_a_gene_decoder_matches_arc_state(arc, tmp_path):
    """Arc's ST on cell embeddings (embed_key="X_state") with its LatentToGeneDecoder: same latent, same genes."""
    model_class, _ = arc
    width, n_genes = 12, 9  # an embedding of 12 dimensions decoded to 9 genes
    torch.manual_seed(0)
    decoder_cfg = dict(latent_dim=width, gene_dim=n_genes, hidden_dims=[16, 8], dropout=0.1, residual_decoder=False)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = model_class(
            input_dim=width, hidden_dim=32, output_dim=width, pert_dim=PERT_DIM, gene_dim=n_genes,
            embed_key="X_state", output_space="gene", cell_set_len=CELLS, n_encoder_layers=2, n_decoder_layers=2,
            decoder_cfg=decoder_cfg, decoder_weight=0.5, loss="energy", distributional_loss="energy",
            transformer_backbone_key="llama", transformer_backbone_kwargs=llama_kwargs(),
        )  # fmt: skip
    assert theirs.gene_decoder is not None
    randomize(theirs)
    theirs.eval()
    torch.save({"state_dict": theirs.state_dict(), "hyper_parameters": dict(theirs.hparams)}, tmp_path / "st.ckpt")
    ours = st.load_arc_checkpoint(tmp_path / "st.ckpt")
    c = ours.config
    assert (c.decoder_genes, c.decoder_hidden, c.decoder_weight) == (n_genes, (16, 8), 0.5)

    basal, pert = torch.randn(SETS, CELLS, width), torch.randn(SETS, CELLS, PERT_DIM)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latent = theirs({"ctrl_cell_emb": basal.reshape(-1, width), "pert_emb": pert.reshape(-1, PERT_DIM)})
        genes = theirs.gene_decoder(latent)
        our_latent = ours(basal, pert)
        our_genes = ours.decode(our_latent)
    assert (our_latent < 0).any()  # an embedding keeps its sign: no ReLU before the decoder
    assert (genes > 0).float().mean() > 0.2 and (genes == 0).any()  # the decoder's ReLU
    largest = max((our_latent.reshape(-1, width) - latent).abs().max().item(),
                  (our_genes.reshape(-1, n_genes) - genes).abs().max().item())  # fmt: skip
    print(f"largest difference from arc-state on embeddings with a gene decoder: {largest:.2e}")
    assert largest < 1e-5


def test_the_gene_decoder_adds_its_weighted_loss():
    torch.manual_seed(0)
    model = st.StateTransition(
        st.STConfig.tiny(8, PERT_DIM, output_space="gene", decoder_genes=5, decoder_hidden=(8,), decoder_weight=0.5)
    )
    basal, pert = torch.randn(2, 4, 8), torch.randn(2, 4, PERT_DIM)
    target, genes = torch.randn(2, 4, 8), torch.rand(2, 4, 5)
    pred = model(basal, pert)
    expected = energy_distance(pred, target).mean() + 0.5 * energy_distance(model.decode(pred), genes).mean()
    assert torch.allclose(model.loss(pred, target, genes), expected)
    with pytest.raises(ValueError, match="target_genes of shape"):
        model.loss(pred, target)
    plain = st.StateTransition(st.STConfig.tiny(8, PERT_DIM, output_space="gene"))
    with pytest.raises(ValueError, match="no gene decoder"):
        plain.decode(pred)
    with pytest.raises(ValueError, match="no gene decoder"):
        plain.loss(pred, target, genes)


def test_unsupported_checkpoints_are_refused(arc, tmp_path):
    model_class, _ = arc
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = model_class(
            input_dim=N_GENES, hidden_dim=32, output_dim=N_GENES, pert_dim=PERT_DIM, embed_key=None,
            output_space="all", transformer_backbone_key="llama", transformer_backbone_kwargs=llama_kwargs(),
        )  # fmt: skip
    saved = {"state_dict": theirs.state_dict(), "hyper_parameters": dict(theirs.hparams)}
    changes = {
        "transformer_backbone_key='GPT2'": {"transformer_backbone_key": "GPT2"},
        "confidence_token=True": {"confidence_token": True},
        "lora.enable=True": {"lora": {"enable": True}},
        "causal Llama": {"transformer_backbone_kwargs": {**llama_kwargs(), "bidirectional_attention": False}},
        "grouped-query attention": {"transformer_backbone_kwargs": {**llama_kwargs(), "num_key_value_heads": 2}},
    }
    for message, change in changes.items():
        torch.save({**saved, "hyper_parameters": {**saved["hyper_parameters"], **change}}, tmp_path / "bad.ckpt")
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
            st.load_arc_checkpoint(tmp_path / "bad.ckpt")
    decoder = {**saved["state_dict"], "gene_decoder.decoder.0.weight": torch.zeros(2, 2)}
    torch.save({**saved, "state_dict": decoder}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="gene decoder .* on expression"):
        st.load_arc_checkpoint(tmp_path / "bad.ckpt")
    torch.save({"state_dict": saved["state_dict"]}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        st.load_arc_checkpoint(tmp_path / "bad.ckpt")
