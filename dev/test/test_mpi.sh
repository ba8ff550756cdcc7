#!/usr/bin/env bash
# The trainers under mpirun (build/mpi/, built with USE_MPI=1 by `make test-mpi`):
#  - equivalence: with the same global batch, 2 ranks and 1 rank (with gradient
#    accumulation standing in for the second rank) give the same loss at each of 20
#    updates to 1e-5 relative, for both trainers, with and without --zero 1; the ViT
#    also with mixup and cutmix (whose images pair across the ranks); checkpoints
#    written by 2 ranks resume on 1, and by 1 on 2 with --zero 1, with the same next losses
#  - real hosts: two network namespaces joined by a veth pair, one rank in each,
#    TCP between them, the same equivalence (skipped where namespaces cannot be made)
#  - faults: a rank killed with SIGKILL stops the run within 60 s with a message
#    naming it, and the last checkpoint resumes
#  - bad launches: a batch that does not divide among the ranks, ranks with
#    different settings or different data stop with a message naming it, and
#    write nothing
# Prints PASS/FAIL lines (dev/run_tests.sh adds them up).
cd "$(dirname "$0")/../.."
GPT=$PWD/build/mpi/train_gpt_flow
VIT=$PWD/build/mpi/train_vit_flow
# mpirun as root needs these; one thread per rank, since the ranks share the machine's cores
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
MPIRUN="timeout 300 mpirun --oversubscribe --bind-to none"
tmp=$(mktemp -d)
source dev/netns_hosts.sh
trap 'netns_hosts_down; rm -rf "$tmp"' EXIT
status=0
check() { # ok, message
    if [ "$1" -eq 1 ]; then echo "PASS $2"; else echo "FAIL $2"; status=1; fi
}

# "count max_relative_difference" of the losses of updates first..last in two JSON-lines logs
compare_losses() { # log_a log_b first last
    awk -v first="$3" -v last="$4" '
        match($0, /^\{"step":[0-9]+,/) && /"loss":/ {
            step = substr($0, 9, RLENGTH - 9) + 0
            rest = substr($0, index($0, "\"loss\":") + 7)
            loss = substr(rest, 1, index(rest, ",") - 1) + 0
            if (step < first || step > last) next
            if (FILENAME == ARGV[1]) a[step] = loss; else b[step] = loss
        }
        END {
            n = 0; worst = 0
            for (s in a) if (s in b) {
                n++
                d = a[s] - b[s]; if (d < 0) d = -d
                m = a[s] < 0 ? -a[s] : a[s]
                if (d / m > worst) worst = d / m
            }
            printf "%d %.2e\n", n, worst
        }' "$1" "$2"
}

# checks that updates first..last of two logs agree to 1e-5 relative
expect_same() { # what log_a log_b first last
    local result n worst
    result=$(compare_losses "$2" "$3" "$4" "$5")
    read -r n worst <<<"$result"
    local want=$(($5 - $4 + 1))
    check "$([ "$n" -eq "$want" ] && awk -v w="$worst" 'BEGIN { exit !(w <= 1e-5) }' && echo 1 || echo 0)" \
        "$1: updates $4-$5 agree ($n of $want compared, largest relative difference $worst, at most 1e-05)"
}

# runs a command, its output in $tmp/NAME.out; on failure shows the end of it
run() { # name command...
    local name=$1
    shift
    if ! "$@" > "$tmp/$name.out" 2>&1; then
        echo "($name failed: $(grep -m1 -i error "$tmp/$name.out"))"
        tail -5 "$tmp/$name.out"
        return 1
    fi
}

# ---- data: tinyshakespeare (make test-mpi prepares it); small random images ----
for split in train val; do
    for class in c0 c1 c2 c3; do
        mkdir -p "$tmp/img/$split/$class"
        # twelve 16x16 grey PNGs of noise (the preparation reads JPEG and PNG only)
        PYTHONPATH=dev python3 - "$tmp/img/$split/$class" <<'PY'
import os, sys
from grey_png import write_grey_png
for i in range(12):
    write_grey_png(os.path.join(sys.argv[1], f"{i}.png"), 16, 16, os.urandom(16 * 16))
PY
    done
    build/prepare_images --size 16 "$tmp/img/$split" "$tmp/img/$split" > "$tmp/prepare_$split.out" 2>&1 ||
        { echo "FAIL preparing the test images: $(tail -1 "$tmp/prepare_$split.out")"; exit 1; }
done

GPT_ARGS="--n_layer 2 --n_embd 32 --n_head 2 --context 16 --steps 20 --warmup_steps 5 --eval_interval 10
    --eval_batches 4 --sample_tokens 0 --checkpoint_interval 10 --dropout_embd 0.1 --dropout_attn 0.1
    --dropout_hidden 0.1 --dropout_resid 0.1"
VIT_ARGS="--train_data $tmp/img/train_*.bin --val_data $tmp/img/val_*.bin --image_size 16 --channels 3
    --patch_size 4 --dims 16,32 --depths 1,2 --heads 2,2 --layerscale 0.1 --layerscale_attn true --steps 20
    --eval_interval 10 --log_interval 5 --checkpoint_interval 10 --mean 0.5,0.5,0.5 --std 0.3,0.3,0.3 --pad 2
    --flip true --dropout 0.1 --drop_path 0.2"

# the same global batch of 16 samples per update: 1 rank in 4 micro-batches of 4,
# 2 ranks in 2 micro-batches of 8 (4 each)
gpt() { # name ranks batch accum [more arguments]
    local name=$1 ranks=$2 batch=$3 accum=$4
    shift 4
    run "$name" $MPIRUN -np "$ranks" "$GPT" $GPT_ARGS --batch_size "$batch" --grad_accum "$accum" \
        --log_file "$tmp/$name.jsonl" --checkpoint "$tmp/${name}_{step}.bin" "$@"
}
# 8 images per update: 1 rank in 2 micro-batches of 4, 2 ranks in one of 8
vit() { # name ranks batch accum [more arguments]
    local name=$1 ranks=$2 batch=$3 accum=$4
    shift 4
    run "$name" $MPIRUN -np "$ranks" "$VIT" $VIT_ARGS --batch_size "$batch" --grad_accum "$accum" \
        --log_file "$tmp/$name.jsonl" --checkpoint "$tmp/${name}_{step}.bin" "$@"
}

# ---- equivalence -------------------------------------------------------------
gpt gpt1 1 4 4
gpt gpt2 2 8 2
expect_same "gpt: 2 ranks (batch 8 x 2 micro-batches) against 1 rank (4 x 4)" "$tmp/gpt1.jsonl" "$tmp/gpt2.jsonl" 1 20
gpt gpt2z 2 8 2 --zero 1
expect_same "gpt: 2 ranks with --zero 1 against 1 rank" "$tmp/gpt1.jsonl" "$tmp/gpt2z.jsonl" 1 20
run gpt_resume "$GPT" --resume "$tmp/gpt2z_10.bin" --log_file "$tmp/gpt_resume.jsonl" \
    --checkpoint "$tmp/gpt_resume.bin"
expect_same "gpt: the 2-rank --zero 1 checkpoint of update 10 resumed on 1 rank" "$tmp/gpt2z.jsonl" \
    "$tmp/gpt_resume.jsonl" 11 20
run gpt_resume2 $MPIRUN -np 2 "$GPT" --resume "$tmp/gpt1_10.bin" --zero 1 --log_file "$tmp/gpt_resume2.jsonl" \
    --checkpoint "$tmp/gpt_resume2.bin"
expect_same "gpt: the 1-rank checkpoint of update 10 resumed on 2 ranks with --zero 1" "$tmp/gpt1.jsonl" \
    "$tmp/gpt_resume2.jsonl" 11 20

vit vit1 1 4 2
vit vit2 2 8 1
expect_same "vit: 2 ranks (batch 8) against 1 rank (4 x 2 micro-batches)" "$tmp/vit1.jsonl" "$tmp/vit2.jsonl" 1 20
vit vit2z 2 8 1 --zero 1
expect_same "vit: 2 ranks with --zero 1 against 1 rank" "$tmp/vit1.jsonl" "$tmp/vit2z.jsonl" 1 20
run vit_resume "$VIT" --resume "$tmp/vit2_10.bin" --log_file "$tmp/vit_resume.jsonl" \
    --checkpoint "$tmp/vit_resume.bin"
expect_same "vit: the 2-rank checkpoint of update 10 resumed on 1 rank" "$tmp/vit2.jsonl" \
    "$tmp/vit_resume.jsonl" 11 20
run vit_resume2 $MPIRUN -np 2 "$VIT" --resume "$tmp/vit1_10.bin" --zero 1 --log_file "$tmp/vit_resume2.jsonl" \
    --checkpoint "$tmp/vit_resume2.bin"
expect_same "vit: the 1-rank checkpoint of update 10 resumed on 2 ranks with --zero 1" "$tmp/vit1.jsonl" \
    "$tmp/vit_resume2.jsonl" 11 20
# mixup and cutmix pair image b with image B-1-b of the micro-batch, which another rank computes
vit vitmix1 1 8 1 --mixup 0.8 --cutmix 1.0
vit vitmix2 2 8 1 --mixup 0.8 --cutmix 1.0 --zero 1
expect_same "vit: mixup and cutmix on 2 ranks with --zero 1 against 1 rank, batch 8" "$tmp/vitmix1.jsonl" \
    "$tmp/vitmix2.jsonl" 1 20

# ---- two hosts: network namespaces joined by a veth pair, TCP between them ----
if [ "$(id -u)" -ne 0 ] || ! command -v ip > /dev/null; then
    echo "SKIP two hosts over TCP: creating network namespaces needs root and iproute2's ip"
elif ! netns_hosts_up "$tmp" > "$tmp/netns.out" 2>&1; then
    echo "SKIP two hosts over TCP: cannot create network namespaces here: $(tail -1 "$tmp/netns.out")"
else
    HOSTS="$NETNS_MPIRUN -np 2"
    addresses=$($HOSTS sh -c 'ip -o -4 addr show | grep -o "10\.89\.0\.[12]"' 2>&1 | sort | tr '\n' ' ')
    check "$([ "$addresses" = "10.89.0.1 10.89.0.2 " ] && echo 1 || echo 0)" \
        "two hosts: mpirun starts one rank in each network namespace (addresses seen: $addresses)"
    run gpt_hosts $HOSTS "$GPT" $GPT_ARGS --batch_size 8 --grad_accum 2 --log_file "$tmp/gpt_hosts.jsonl" \
        --checkpoint ""
    expect_same "two hosts over TCP: gpt, 2 ranks against 1 rank" "$tmp/gpt1.jsonl" "$tmp/gpt_hosts.jsonl" 1 20
    run vit_hosts $HOSTS "$VIT" $VIT_ARGS --batch_size 8 --grad_accum 1 --zero 1 \
        --log_file "$tmp/vit_hosts.jsonl" --checkpoint ""
    expect_same "two hosts over TCP: vit with --zero 1, 2 ranks against 1 rank" "$tmp/vit1.jsonl" \
        "$tmp/vit_hosts.jsonl" 1 20
    netns_hosts_down
fi

# ---- a rank killed mid-run ---------------------------------------------------
timeout 300 mpirun --oversubscribe --bind-to none -np 2 "$GPT" --n_layer 2 --n_embd 64 --n_head 2 --context 64 \
    --batch_size 8 --steps 100000 --eval_interval 0 --val_data "" --sample_tokens 0 --checkpoint_interval 10 \
    --checkpoint "$tmp/killed_{step}.bin" --log_file "$tmp/killed.jsonl" --log_interval 100 > "$tmp/killed.out" 2>&1 &
mpirun_pid=$!
for i in $(seq 1 300); do # until two checkpoints are written
    [ "$(ls "$tmp"/killed_*.bin 2>/dev/null | wc -l)" -ge 2 ] && break
    sleep 0.1
done
# mpirun's children are the ranks (and timeout's child is mpirun)
mpirun_pid=$(pgrep -P "$mpirun_pid" -x mpirun || echo "$mpirun_pid")
victim=""
for pid in $(pgrep -P "$mpirun_pid"); do
    grep -qz '^OMPI_COMM_WORLD_RANK=1$' "/proc/$pid/environ" 2>/dev/null && victim=$pid
done
if [ -z "$victim" ]; then
    check 0 "faults: rank 1 of the run to kill not found [$(tail -2 "$tmp/killed.out")]"
else
    kill -9 "$victim"
    start=$(date +%s)
    while kill -0 "$mpirun_pid" 2> /dev/null && [ $(($(date +%s) - start)) -lt 60 ]; do sleep 0.2; done
    waited=$(($(date +%s) - start))
    stopped=1
    if kill -0 "$mpirun_pid" 2> /dev/null; then stopped=0; kill -9 "$mpirun_pid"; fi
    wait
    message=$(grep -m1 -E "rank 1 .*signal 9|signal 9.*rank 1" "$tmp/killed.out")
    check "$([ $stopped = 1 ] && [ -n "$message" ] && echo 1 || echo 0)" \
        "faults: rank 1 killed with SIGKILL, the run stopped after ${waited} s (at most 60) saying: $message"
    last=$(ls "$tmp"/killed_*.bin | sed 's/.*killed_\([0-9]*\)\.bin/\1/' | sort -n | tail -1)
    # the last checkpoint resumes, and its next updates are those the killed run logged
    run killed_resume "$GPT" --resume "$tmp/killed_$last.bin" --steps $((last + 3)) \
        --log_file "$tmp/killed_resume.jsonl" --checkpoint "$tmp/killed_resumed.bin"
    resumed=$?
    read -r n worst <<<"$(compare_losses "$tmp/killed.jsonl" "$tmp/killed_resume.jsonl" $((last + 1)) \
                                         $((last + 3)))"
    check "$([ $resumed = 0 ] && [ -f "$tmp/killed_resumed.bin" ] &&
             awk -v w="$worst" 'BEGIN { exit !(w <= 1e-5) }' && echo 1 || echo 0)" \
        "faults: the last checkpoint (update $last) resumes on 1 rank with the losses logged before the kill \
($n of 3 compared, largest relative difference $worst)"
fi

# ---- bad launches --------------------------------------------------------------
# expects a non-zero exit, the words in the message, and the outputs untouched
expect_failure() { # what words command...
    local what=$1 words=$2
    shift 2
    echo "sentinel checkpoint" > "$tmp/out.bin"
    echo "sentinel log" > "$tmp/out.jsonl"
    "$@" > "$tmp/bad.out" 2>&1
    local rc=$?
    # the ranks' output interleaves, so the words are looked for in all of it
    local message
    message=$(grep -m1 -F "$words" "$tmp/bad.out" || grep -m1 "error:" "$tmp/bad.out")
    local untouched=0
    [ "$(cat "$tmp/out.bin")" = "sentinel checkpoint" ] && [ "$(cat "$tmp/out.jsonl")" = "sentinel log" ] && untouched=1
    check "$([ $rc -ne 0 ] && grep -qF "$words" "$tmp/bad.out" && [ $untouched = 1 ] && echo 1 || echo 0)" \
        "bad launch, $what: exit $rc, outputs untouched: $untouched [$message]"
}
OUT="--checkpoint $tmp/out.bin --log_file $tmp/out.jsonl"
expect_failure "gpt batch 7 on 2 ranks" "batch_size 7 does not divide by the 2 ranks" \
    $MPIRUN -np 2 "$GPT" $GPT_ARGS --batch_size 7 $OUT
expect_failure "vit batch 5 on 2 ranks" "batch_size 5 does not divide by the 2 ranks" \
    $MPIRUN -np 2 "$VIT" $VIT_ARGS --batch_size 5 $OUT
expect_failure "ranks launched with different settings" "rank 1: setting lr is 0.002 here but 0.001 on rank 0" \
    $MPIRUN -np 1 "$GPT" $GPT_ARGS --batch_size 8 --lr 1e-3 $OUT : \
            -np 1 "$GPT" $GPT_ARGS --batch_size 8 --lr 2e-3 $OUT
# the same path, train.bin, in two folders holding different text
for half in a b; do
    mkdir -p "$tmp/data_$half"
    if [ $half = a ]; then head -2000 data/tinyshakespeare/input.txt; else tail -2000 data/tinyshakespeare/input.txt
    fi > "$tmp/data_$half/input.txt"
    build/prepare_text char "$tmp/data_$half/input.txt" "$tmp/data_$half" > /dev/null
done
expect_failure "ranks that read different training data" "rank 1: the training data (train_data) differ" \
    $MPIRUN -np 1 -wdir "$tmp/data_a" "$GPT" $GPT_ARGS --batch_size 8 --train_data train.bin --val_data "" \
    --vocab "" --vocab_size 65 $OUT : -np 1 -wdir "$tmp/data_b" "$GPT" $GPT_ARGS --batch_size 8 \
    --train_data train.bin --val_data "" --vocab "" --vocab_size 65 $OUT

exit $status
