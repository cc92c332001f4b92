package inferbridge_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	inferbridge "github.com/inferbridge/inferbridge/clients/go"
)

// A progressive rollout: version 2 of a model gets 10 % of the traffic, waits at an
// approval gate, then takes all of it. The server runs the analysis every interval and
// rolls back by itself when a check fails. releaseServerURL is a test server (explicit
// model control, --state-dir) whose model "rollout_example" has versions 1 and 2.
func ExampleRESTClient_StartRollout() {
	url, err := releaseServerURL()
	if err != nil {
		panic(err)
	}
	client, err := inferbridge.NewRESTClient(url)
	if err != nil {
		panic(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	rollout, err := client.StartRollout(ctx, "rollout_example", inferbridge.RolloutSpec{
		Candidate: 2,
		Steps: []inferbridge.RolloutStep{
			inferbridge.Canary(10, time.Second),
			inferbridge.Approval("qa", 1),
			inferbridge.Canary(100, time.Second),
		},
		Analysis: &inferbridge.AnalysisSpec{
			Interval:    inferbridge.RolloutDuration(500 * time.Millisecond),
			MinRequests: new(0),
			Checks: []inferbridge.AnalysisCheck{
				{ErrorRate: &inferbridge.ErrorRateCheck{Max: new(0.01)}},
				{LatencyP99: &inferbridge.LatencyCheck{MaxMS: 1000}},
			},
		},
	}, inferbridge.RolloutActor("release-bot"))
	if err != nil {
		panic(err)
	}
	fmt.Println(rollout.Phase, "weights:", rollout.Weights)

	// A second rollout of the same model is refused with 409.
	_, err = client.StartRollout(ctx, "rollout_example", rollout.Spec)
	fmt.Println("second rollout refused:", errors.Is(err, inferbridge.ErrConflict))

	// The model's traffic goes on meanwhile; the analysis judges the candidate's share.
	request := &inferbridge.InferRequest{
		Model:  "rollout_example",
		Inputs: []*inferbridge.Tensor{inferbridge.NewFP32("x", []int64{1, 1}, []float32{0})},
	}
	until := func(done func(*inferbridge.Rollout) bool) {
		for !done(rollout) {
			if _, err := client.Infer(ctx, request); err != nil {
				panic(err)
			}
			if rollout, err = client.RolloutStatus(ctx, "rollout_example"); err != nil {
				panic(err)
			}
		}
	}
	until(func(r *inferbridge.Rollout) bool { return r.WaitingFor != nil })
	fmt.Printf("waiting for gate %q (%d of %d approvals)\n", rollout.WaitingFor.Gate,
		rollout.WaitingFor.Approvals, rollout.WaitingFor.Required)
	if _, err := client.ApproveRollout(ctx, "rollout_example", "qa", "alice", "dashboards look fine"); err != nil {
		panic(err)
	}
	until(func(r *inferbridge.Rollout) bool { return !r.Active() })
	fmt.Println(rollout.Phase, "weights:", rollout.Weights)

	events, err := client.RolloutHistory(ctx, "rollout_example")
	if err != nil {
		panic(err)
	}
	for _, event := range events {
		if event.Rollout == rollout.ID {
			fmt.Println(event.Event, "by", event.Actor)
		}
	}

	// Forget the ended rollout: the model goes back to its version policy (here, version 1).
	// Right after a promotion the server may still be swapping versions; its 409 says so,
	// and a later call succeeds.
	cleared, err := client.ClearRollout(ctx, "rollout_example")
	for errors.Is(err, inferbridge.ErrConflict) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		cleared, err = client.ClearRollout(ctx, "rollout_example")
	}
	if err != nil {
		panic(err)
	}
	fmt.Println("default version after clearing:", *cleared.DefaultVersion)
	// Output:
	// progressing weights: map[1:90 2:10]
	// second rollout refused: true
	// waiting for gate "qa" (0 of 1 approvals)
	// promoted weights: map[1:0 2:100]
	// started by release-bot
	// step by controller
	// approved by alice
	// step by alice
	// promoted by controller
	// default version after clearing: 1
}
