package pool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/inferbridge/inferbridge/gateway/internal/batching"
)

// Batch aggregation at the gateway (optional, per model): ModelInfer requests for the
// same model, version, input signature and requested outputs are merged along the first
// dimension of their raw_input_contents into one upstream ModelInfer, whose
// raw_output_contents are split back by rows. REST infer requests of a batched model are
// translated to ModelInfer first (translate.go), so batching needs gRPC upstreams. A
// request that cannot be merged (tensor `contents` instead of raw, request parameters
// other than timeout, inputs of different first dimensions) is forwarded alone.

type inferTensor struct {
	name, datatype string
	shape          []int64
	params         [][]byte // field 4 entries, raw
}

type parsedInfer struct {
	model, version, id string
	otherParams        bool // request parameters besides timeout
	inputs             []inferTensor
	outputs            [][]byte // field 6, raw
	raws               [][]byte
	contents           bool // some input uses InferTensorContents
}

func parseInferRequest(msg []byte) (*parsedInfer, error) {
	r := &parsedInfer{}
	err := bytesFields(msg, "ModelInferRequest", func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			r.model = string(v)
		case 2:
			r.version = string(v)
		case 3:
			r.id = string(v)
		case 4:
			p := map[string]any{}
			if err := decodeParameter(v, p); err != nil {
				return err
			}
			if _, ok := p["timeout"]; !ok {
				r.otherParams = true
			}
		case 5:
			t, contents, err := parseInputTensor(v)
			if err != nil {
				return err
			}
			r.contents = r.contents || contents
			r.inputs = append(r.inputs, t)
		case 6:
			r.outputs = append(r.outputs, v)
		case 7:
			r.raws = append(r.raws, v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// bytesFields calls visit with each length-delimited field of a protobuf message (the
// only kind these messages' fields of interest are), skipping the others.
func bytesFields(msg []byte, what string, visit func(num protowire.Number, v []byte) error) error {
	bad := errors.New("malformed " + what)
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return bad
		}
		msg = msg[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, msg); n < 0 {
				return bad
			}
			msg = msg[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(msg)
		if n < 0 {
			return bad
		}
		msg = msg[n:]
		if err := visit(num, v); err != nil {
			return err
		}
	}
	return nil
}

func parseInputTensor(m []byte) (inferTensor, bool, error) {
	var t inferTensor
	contents := false
	out, err := decodeOutput(m) // the same layout for fields 1-3
	if err != nil {
		return t, false, err
	}
	t.name, t.datatype, t.shape = out.name, out.datatype, out.shape
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			return t, false, errors.New("malformed InferInputTensor")
		}
		m = m[n:]
		k := protowire.ConsumeFieldValue(num, typ, m)
		if k < 0 {
			return t, false, errors.New("malformed InferInputTensor")
		}
		if typ == protowire.BytesType && num == 4 {
			v, _ := protowire.ConsumeBytes(m)
			t.params = append(t.params, v)
		}
		if num == 5 {
			contents = true
		}
		m = m[k:]
	}
	return t, contents, nil
}

// batchKey says whether r can be merged, its rows, and the key it merges under.
func (r *parsedInfer) batchKey() (string, int, bool) {
	if r.contents || r.otherParams || len(r.inputs) == 0 || len(r.raws) != len(r.inputs) {
		return "", 0, false
	}
	rows := int64(-1)
	var key bytes.Buffer
	key.WriteString(r.version)
	for _, in := range r.inputs {
		if len(in.shape) == 0 || in.shape[0] <= 0 || (rows >= 0 && in.shape[0] != rows) {
			return "", 0, false
		}
		rows = in.shape[0]
		fmt.Fprintf(&key, "\x00%s\x00%s\x00%v", in.name, in.datatype, in.shape[1:])
		for _, p := range in.params {
			key.Write(p)
		}
	}
	for _, o := range r.outputs {
		key.WriteByte(1)
		key.Write(o)
	}
	return key.String(), int(rows), true
}

// mergeInfer builds one ModelInferRequest of every item (same key), with timeoutUS.
func mergeInfer(items []*parsedInfer, timeoutUS int64) []byte {
	first := items[0]
	total := int64(0)
	for _, it := range items {
		total += it.inputs[0].shape[0]
	}
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, first.model)
	if first.version != "" {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, first.version)
	}
	if timeoutUS > 0 {
		b, _ = appendParameter(b, 4, "timeout", []byte(strconv.FormatInt(timeoutUS, 10)))
	}
	for _, in := range first.inputs {
		var t []byte
		t = protowire.AppendTag(t, 1, protowire.BytesType)
		t = protowire.AppendString(t, in.name)
		t = protowire.AppendTag(t, 2, protowire.BytesType)
		t = protowire.AppendString(t, in.datatype)
		var shape []byte
		shape = protowire.AppendVarint(shape, uint64(total))
		for _, d := range in.shape[1:] {
			shape = protowire.AppendVarint(shape, uint64(d))
		}
		t = protowire.AppendTag(t, 3, protowire.BytesType)
		t = protowire.AppendBytes(t, shape)
		for _, p := range in.params {
			t = protowire.AppendTag(t, 4, protowire.BytesType)
			t = protowire.AppendBytes(t, p)
		}
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendBytes(b, t)
	}
	for _, o := range first.outputs {
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendBytes(b, o)
	}
	for i := range first.inputs {
		size := 0
		for _, it := range items {
			size += len(it.raws[i])
		}
		b = protowire.AppendTag(b, 7, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(size))
		for _, it := range items {
			b = append(b, it.raws[i]...)
		}
	}
	return b
}

// splitInferResponse cuts a merged ModelInferResponse into one per item.
func splitInferResponse(msg []byte, items []*parsedInfer) ([][]byte, error) {
	var model, version []byte
	var params [][]byte
	var outputs []grpcOutput
	var outputParams [][][]byte
	var raws [][]byte
	err := bytesFields(msg, "ModelInferResponse", func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			model = v
		case 2:
			version = v
		case 4:
			params = append(params, v)
		case 5:
			t, _, err := parseInputTensor(v) // name, datatype, shape, parameters: the same fields
			if err != nil {
				return err
			}
			outputs = append(outputs, grpcOutput{name: t.name, datatype: t.datatype, shape: t.shape})
			outputParams = append(outputParams, t.params)
		case 6:
			raws = append(raws, v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(raws) != len(outputs) {
		return nil, fmt.Errorf("the upstream's batched response has %d outputs and %d raw contents", len(outputs), len(raws))
	}
	total := int64(0)
	for _, it := range items {
		total += it.inputs[0].shape[0]
	}
	// cuts[j][i] is item i's part of output j.
	cuts := make([][][]byte, len(outputs))
	for j, out := range outputs {
		if len(out.shape) == 0 || out.shape[0] != total {
			return nil, fmt.Errorf("output '%s' has shape %v: its first dimension is not the batch's %d rows", out.name, out.shape, total)
		}
		parts, err := cutRows(out.datatype, raws[j], total, items)
		if err != nil {
			return nil, fmt.Errorf("output '%s': %v", out.name, err)
		}
		cuts[j] = parts
	}
	answers := make([][]byte, len(items))
	for i, it := range items {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, model)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, version)
		if it.id != "" {
			b = protowire.AppendTag(b, 3, protowire.BytesType)
			b = protowire.AppendString(b, it.id)
		}
		for _, p := range params {
			b = protowire.AppendTag(b, 4, protowire.BytesType)
			b = protowire.AppendBytes(b, p)
		}
		for j, out := range outputs {
			var o []byte
			o = protowire.AppendTag(o, 1, protowire.BytesType)
			o = protowire.AppendString(o, out.name)
			o = protowire.AppendTag(o, 2, protowire.BytesType)
			o = protowire.AppendString(o, out.datatype)
			var shape []byte
			shape = protowire.AppendVarint(shape, uint64(it.inputs[0].shape[0]))
			for _, d := range out.shape[1:] {
				shape = protowire.AppendVarint(shape, uint64(d))
			}
			o = protowire.AppendTag(o, 3, protowire.BytesType)
			o = protowire.AppendBytes(o, shape)
			for _, p := range outputParams[j] {
				o = protowire.AppendTag(o, 4, protowire.BytesType)
				o = protowire.AppendBytes(o, p)
			}
			b = protowire.AppendTag(b, 5, protowire.BytesType)
			b = protowire.AppendBytes(b, o)
		}
		for j := range outputs {
			b = protowire.AppendTag(b, 6, protowire.BytesType)
			b = protowire.AppendBytes(b, cuts[j][i])
		}
		answers[i] = b
	}
	return answers, nil
}

// cutRows splits raw (total rows of datatype) into the items' rows.
func cutRows(datatype string, raw []byte, total int64, items []*parsedInfer) ([][]byte, error) {
	parts := make([][]byte, len(items))
	if datatype != "BYTES" {
		if int64(len(raw))%total != 0 {
			return nil, fmt.Errorf("%d bytes do not divide into %d rows", len(raw), total)
		}
		row := int64(len(raw)) / total
		for i, it := range items {
			n := it.inputs[0].shape[0] * row
			parts[i], raw = raw[:n], raw[n:]
		}
		return parts, nil
	}
	// BYTES: length-prefixed elements, the same count in every row.
	var offsets []int
	for at := 0; at < len(raw); {
		if len(raw)-at < 4 {
			return nil, errors.New("truncated BYTES element")
		}
		offsets = append(offsets, at)
		at += 4 + int(binary.LittleEndian.Uint32(raw[at:]))
		if at > len(raw) {
			return nil, errors.New("truncated BYTES element")
		}
	}
	if int64(len(offsets))%total != 0 {
		return nil, fmt.Errorf("%d elements do not divide into %d rows", len(offsets), total)
	}
	perRow := int64(len(offsets)) / total
	offsets = append(offsets, len(raw))
	element := int64(0)
	for i, it := range items {
		n := it.inputs[0].shape[0] * perRow
		parts[i] = raw[offsets[element]:offsets[element+n]]
		element += n
	}
	return parts, nil
}

// batchItem is one request waiting in a batch.
type batchItem struct {
	parsed   *parsedInfer
	deadline time.Time
}

// newBatcher is the batcher of one model: it runs a merged ModelInfer on the model's
// gRPC upstreams, like any forwarded call (balancing, retries, breakers).
func (p *Pool) newBatcher(model string, maxRows int, delay time.Duration, idle bool) *batching.Batcher {
	b := &batching.Batcher{MaxRows: maxRows, MaxDelay: delay, IdleDispatch: idle}
	b.Run = func(batch []*batching.Request) {
		items := make([]*parsedInfer, len(batch))
		deadline := time.Time{}
		for i, r := range batch {
			it := r.Payload.(*batchItem)
			items[i] = it.parsed
			if deadline.IsZero() || it.deadline.Before(deadline) {
				deadline = it.deadline
			}
		}
		p.metrics.batchSize.WithLabelValues(model).Observe(float64(len(batch)))
		answers, err := p.runBatch(model, items, deadline)
		for i, r := range batch {
			if err != nil {
				r.Answer(batching.Result{Err: err})
			} else {
				r.Answer(batching.Result{Payload: answers[i]})
			}
		}
	}
	return b
}

func (p *Pool) runBatch(model string, items []*parsedInfer, deadline time.Time) ([][]byte, error) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	version := items[0].version
	pickGroup := func(s *snapshot) (*group, errNoRoute) {
		rt := s.lookup(model, version)
		if rt == nil {
			return nil, routeNone
		}
		return &rt.grpc, 0
	}
	type result struct {
		resp rawMsg
		err  error
	}
	var op string
	if p.tracing != nil {
		op = inferencePrefix + "ModelInfer (batch of " + model + ")"
	}
	res, refusal := forward(ctx, p, op, pickGroup, "", deadline,
		func(ctx context.Context, u *upstream, _ int) (*result, attemptResult) {
			msg := mergeInfer(items, max(int64(time.Until(deadline)/time.Microsecond), 1))
			r := &result{}
			r.err = u.conn.Invoke(u.grpcContext(ctx), inferencePrefix+"ModelInfer", &rawMsg{Data: mem.BufferSlice{mem.SliceBuffer(msg)}}, &r.resp)
			return r, classifyGRPC(ctx, r.err)
		},
		func(r *result) {
			if r != nil {
				r.resp.Data.Free()
			}
		})
	switch {
	case refusal == routeNone:
		return nil, status.Errorf(codes.NotFound, "model '%s' is not served by any upstream", model)
	case res == nil && ctx.Err() != nil:
		return nil, status.Error(codes.DeadlineExceeded, "inferbridge gateway: deadline exceeded before an upstream answered")
	case res == nil:
		return nil, status.Errorf(codes.Unavailable, "inferbridge gateway: no upstream serving model '%s' is available", model)
	case res.err != nil:
		return nil, res.err
	}
	defer res.resp.Data.Free()
	answers, err := splitInferResponse(res.resp.Data.Materialize(), items)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "inferbridge gateway: batched answer: %v", err)
	}
	return answers, nil
}

// batched answers a ModelInferRequest through its model's batcher; ok is false when the
// model is not batched, has no gRPC upstream in rotation, or the request cannot merge.
func (p *Pool) batched(ctx context.Context, model string, msg []byte, deadline time.Time) (answer []byte, err error, ok bool) {
	b := p.batchers[model]
	if b == nil {
		return nil, nil, false
	}
	parsed, perr := parseInferRequest(msg)
	if perr != nil {
		return nil, nil, false
	}
	key, rows, mergeable := parsed.batchKey()
	if !mergeable {
		return nil, nil, false
	}
	if rt := p.snap.Load().lookup(model, parsed.version); rt == nil || len(rt.grpc.ups) == 0 {
		return nil, nil, false
	}
	v, err := b.Submit(ctx, &batching.Request{Rows: rows, Key: key, Payload: &batchItem{parsed: parsed, deadline: deadline}})
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err(), true
		}
		return nil, err, true
	}
	return v.([]byte), nil, true
}
