package redis

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/doraproject/dora/autoscaler/load"
)

var _ load.Waker = (*Store)(nil)

// wakeBuffer is the room of a Wakes channel; beyond it wake-ups are dropped
// (they repeat while requests wait).
const wakeBuffer = 64

// wakeChannel is the Pub/Sub channel wake-ups travel on.
func (s *Store) wakeChannel() string { return s.prefix + "wake" }

// wakeMsg is one wake-up on the channel.
type wakeMsg struct {
	Ufop    string `json:"ufop"`
	Version string `json:"version"`
	Region  string `json:"region"`
}

// Wake publishes key on the wake-up channel (PUBLISH): every autoscaler
// subscribed hears of it at once.
func (s *Store) Wake(ctx context.Context, key load.Key) error {
	b, err := json.Marshal(wakeMsg{Ufop: key.Ufop, Version: key.Version, Region: key.Region})
	if err != nil {
		return fmt.Errorf("wake %s: %w", key.Ufop, err)
	}
	if err := s.client.Publish(ctx, s.wakeChannel(), b).Err(); err != nil {
		return fmt.Errorf("wake %s: %w", key.Ufop, err)
	}
	return nil
}

// Wakes subscribes to the wake-up channel (SUBSCRIBE, re-established by
// the client after a connection loss) until ctx ends.
func (s *Store) Wakes(ctx context.Context) <-chan load.Key {
	out := make(chan load.Key, wakeBuffer)
	ps := s.client.Subscribe(ctx, s.wakeChannel())
	msgs := ps.Channel()
	go func() {
		defer close(out)
		defer ps.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-msgs:
				if !ok {
					return
				}
				var w wakeMsg
				if json.Unmarshal([]byte(m.Payload), &w) != nil || w.Ufop == "" {
					continue
				}
				select {
				case out <- load.Key{Ufop: w.Ufop, Version: w.Version, Region: w.Region}:
				default:
				}
			}
		}
	}()
	return out
}
