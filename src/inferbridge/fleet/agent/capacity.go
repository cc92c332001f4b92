package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Accelerator is a kind of device on the node.
type Accelerator struct {
	Type   string `json:"type"`
	Count  int    `json:"count"`
	Memory int64  `json:"memory"`
}

// Capacity is what the node offers the control plane's placement.
type Capacity struct {
	CPU          float64       `json:"cpu"`
	Memory       int64         `json:"memory"`
	Accelerators []Accelerator `json:"accelerators"`
}

// DetectCapacity reads CPUs and memory from the system and GPUs from nvidia-smi (when
// present); declared accelerators (config or flags) are added as they are.
func DetectCapacity(ctx context.Context, declared []Accelerator, cpu float64, memory int64) Capacity {
	c := Capacity{CPU: cpu, Memory: memory, Accelerators: append([]Accelerator{}, declared...)}
	if c.CPU == 0 {
		c.CPU = float64(runtime.NumCPU())
	}
	if c.Memory == 0 {
		c.Memory = memTotal()
	}
	if len(declared) == 0 {
		c.Accelerators = append(c.Accelerators, nvidiaGPUs(ctx)...)
	}
	return c
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// nvidiaGPUs groups the GPUs nvidia-smi lists by name (e.g. "NVIDIA H200" -> "H200").
func nvidiaGPUs(ctx context.Context) []Accelerator {
	path, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return nil
	}
	return parseNvidiaSMI(string(out))
}

func parseNvidiaSMI(out string) []Accelerator {
	var list []Accelerator
	index := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, mem, ok := strings.Cut(line, ",")
		if !ok {
			continue
		}
		kind := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), "NVIDIA "))
		kind = strings.ReplaceAll(kind, " ", "-")
		mib, _ := strconv.ParseInt(strings.TrimSpace(mem), 10, 64)
		if i, seen := index[kind]; seen {
			list[i].Count++
			continue
		}
		index[kind] = len(list)
		list = append(list, Accelerator{Type: kind, Count: 1, Memory: mib << 20})
	}
	return list
}

// parseAccelerator reads `type=T4,count=1,memory=16Gi`.
func parseAccelerator(text string) (Accelerator, error) {
	a := Accelerator{Count: 1}
	for _, part := range strings.Split(text, ",") {
		key, value, ok := strings.Cut(part, "=")
		if !ok {
			return a, fmt.Errorf("accelerator %q: %q is not key=value", text, part)
		}
		switch strings.TrimSpace(key) {
		case "type":
			a.Type = strings.TrimSpace(value)
		case "count":
			n, err := strconv.Atoi(strings.TrimSpace(value))
			if err != nil || n < 0 {
				return a, fmt.Errorf("accelerator %q: bad count", text)
			}
			a.Count = n
		case "memory":
			n, err := parseBytes(value)
			if err != nil {
				return a, fmt.Errorf("accelerator %q: %w", text, err)
			}
			a.Memory = n
		default:
			return a, fmt.Errorf("accelerator %q: unknown key %q (type, count, memory)", text, key)
		}
	}
	if a.Type == "" {
		return a, fmt.Errorf("accelerator %q: type is required", text)
	}
	return a, nil
}

func parseBytes(text string) (int64, error) {
	text = strings.TrimSpace(text)
	units := []struct {
		suffix string
		scale  int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}}
	for _, u := range units {
		if strings.HasSuffix(text, u.suffix) {
			n, err := strconv.ParseFloat(strings.TrimSuffix(text, u.suffix), 64)
			if err != nil {
				return 0, fmt.Errorf("%q is not a size", text)
			}
			return int64(n * float64(u.scale)), nil
		}
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size", text)
	}
	return n, nil
}
