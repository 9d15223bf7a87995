"""cxr14-synth: an offline stand-in for NIH ChestX-ray14 with real labels and rendered images.

Labels, patient IDs, age, sex and view are real rows of the NIH metadata table that ships
with torchxrayvision, so prevalence (Hernia 0.2% ... Infiltration 17.7%) and co-occurrence
are those of the real dataset. The train/val images (`synth_images`) and the test images
(`synth_test_images`) are drawn from two label-blind shares of its patients (nih_sample). Images are rendered procedurally: a radiograph-like chest
(body, lungs, heart, mediastinum, spine, ribs, clavicles, diaphragm, vessel markings) that
varies per patient and per exposure, plus one visual signature per finding. The eight
findings with NIH bounding boxes are placed at a sampled real box.

Label noise: the CSV keeps the real labels exactly. The image is rendered from a noisy copy, per
finding as NIH's text-mined labels agree with what the image shows (agreement.py): a labelled
finding's signature is left out with probability 1 - PPV, and an unlabelled finding is drawn with
the probability that gives NIH's label its sensitivity. PPV and sensitivity are measured against the
Google 2019 expert labels for pneumothorax, nodule/mass and airspace opacity; the other findings'
are a documented choice.

Findings with a common cause share a latent severity per image (latent.py): cardiomegaly, effusion
and oedema (with vascular congestion), and consolidation, pneumonia and infiltration (at one place).
With --synth-shortcuts, marks that follow NIH's labels but are not findings are drawn too
(shortcuts.py): chest drains on labelled pneumothorax, portable markers on sicker AP patients.

Images are displayed as radiographs are: the patient's left is the image's right, so the
heart sits right of centre. AP views get a magnified heart, lower lung volumes and more noise.
A patient's build (thorax, lungs, heart, ribs) is seeded by patient ID; positioning,
inspiration and exposure vary per image.

Difficulty per finding is set by FINDING_STRENGTH (1.0 = textbook-obvious signature), calibrated
so that equal weighting ranks the findings as published models rank them on real NIH (calibration.py).
Every image is a pure function of (seed, its metadata row, its rendered labels, size), so
the same request gives byte-identical PNGs whatever the chunking or thread count. Bump
GENERATOR_VERSION whenever rendering changes: cached datasets then regenerate.

Modules, each importing only those listed before it (and numpy, pandas, PIL, threadpoolctl):

    agreement   how NIH's labels agree with the image per finding (PPV, sensitivity, source), and
                their measurement from the shipped tables; may import mtlbench.tasks
    calibration published per-class AUROC on NIH's official split, and Spearman's rho against it;
                may import mtlbench.tasks
    rng         counter-based random numbers: a hash of (seed, image or patient key, stream name)
    latent      the shared latent severity of the cardiac and airspace findings; may import mtlbench.tasks
    params      the generator's constants and the parameters stored as synth.json;
                may import mtlbench.datasets.nih_tables
    nih_sample  real rows of the NIH table: train/val and test drawn from separate patients
                (each split its own size, at NIH's prevalence), and the real finding boxes;
                may import mtlbench.datasets.nih_tables, mtlbench.errors, mtlbench.tasks
    noise       the noisy copy of the labels that images are rendered from; may import mtlbench.tasks
    ops         float32 in-place array primitives (steps, exp, broadcasting columns)
    scene       a block of images in the patient's frame, and the per-image noise it draws on
    anatomy     the healthy chest: per-image anatomy and its attenuation image
    findings    the 14 finding signatures (Cardiomegaly, Emphysema reshape the anatomy); may
                import mtlbench.tasks
    shortcuts   the shortcut confounders of --synth-shortcuts (chest drains, portable marks), which
                follow NIH's labels; may import mtlbench.tasks
    render      images from metadata rows, chunk by chunk on threads, with the film response;
                may import mtlbench.tasks
    writer      generation on disk: scratch folder, markers, swap into place, what may be
                replaced; may import mtlbench.datasets.{base,image_cache,nih_layout,nih_tables},
                mtlbench.errors, mtlbench.owned, mtlbench.tasks
    loader      the `cxr14-synth` dataset loader (registered on import: mtlbench.datasets.catalog
                imports it) and its request checks; may import mtlbench.datasets.{base,nih_layout,
                nih_tables}, mtlbench.errors, mtlbench.registry

This file imports nothing: import the module that holds what you need.
"""
