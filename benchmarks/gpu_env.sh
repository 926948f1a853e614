# Sourced by the GPU scripts (gpu_check.sh, gpu_research.sh) on a device machine that has torch
# but no network: installs the carried wheels (.whl: open_clip_torch, ftfy, wcwidth, nltk, pytest)
# into /tmp/site, unpacks spaCy with en_core_web_sm (.spacy/spsite.tgz) when carried, else puts
# .stub (spaCy's stop-word list alone) on the path, and WordNet (.nltk/nltk_data.tgz).
# benchmarks/make_gpu_carry.sh builds the three folders here.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.stub PYTHONUNBUFFERED=1
if [ -f .spacy/spsite.tgz ]; then  # the real spaCy and en_core_web_sm (benchmarks/make_gpu_carry.sh)
    tar -xzf .spacy/spsite.tgz -C /tmp && export PYTHONPATH=/tmp/site:/tmp/spsite:$PWD/src
fi
mkdir -p /tmp/nltk && tar -xzf .nltk/nltk_data.tgz -C /tmp/nltk && export NLTK_DATA=/tmp/nltk/nltk_data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__, torch.cuda.get_device_name(0))"
