// Command interop checks auditor's checkpoints, witness cosignatures and Merkle proofs with
// independent implementations: golang.org/x/mod/sumdb/note (C2SP signed notes),
// github.com/transparency-dev/formats (tlog-checkpoint bodies, tlog-cosignature/v1) and
// github.com/transparency-dev/merkle (RFC 9162 inclusion and consistency proofs).
//
// It reads a JSON request on stdin and writes a JSON report on stdout; it also cosigns the
// first checkpoint with a key of its own, so the Python side can verify a Go cosignature.
package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

type consistency struct {
	Size1, Size2 uint64
	Root1, Root2 []byte
	Proof        [][]byte
}

type inclusion struct {
	Index, Size uint64
	Leaf, Root  []byte
	Proof       [][]byte
}

type request struct {
	LogVKey     string
	WitnessVKey string
	Notes       []string // checkpoints that must open with the log key
	Cosigned    []string // checkpoints that must also carry a valid witness cosignature
	Consistency []consistency
	Inclusion   []inclusion
}

type checkpoint struct {
	Origin string
	Size   uint64
	Hash   []byte
}

type report struct {
	Notes          []*checkpoint // nil where the note did not open
	Errors         []string
	Cosigned       []bool
	Consistency    []bool
	Inclusion      []bool
	GoWitnessVKey  string
	GoCosignedNote string
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var rep report
	logV, err := note.NewVerifier(req.LogVKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, "log vkey:", err)
		os.Exit(2)
	}
	for _, n := range req.Notes {
		opened, err := note.Open([]byte(n), note.VerifierList(logV))
		if err != nil {
			rep.Notes = append(rep.Notes, nil)
			rep.Errors = append(rep.Errors, err.Error())
			continue
		}
		var c log.Checkpoint
		if _, err := c.Unmarshal([]byte(opened.Text)); err != nil {
			rep.Notes = append(rep.Notes, nil)
			rep.Errors = append(rep.Errors, err.Error())
			continue
		}
		rep.Notes = append(rep.Notes, &checkpoint{c.Origin, c.Size, c.Hash})
	}
	if req.WitnessVKey != "" {
		wV, err := fnote.NewVerifierForCosignatureV1(req.WitnessVKey)
		if err != nil {
			fmt.Fprintln(os.Stderr, "witness vkey:", err)
			os.Exit(2)
		}
		for _, n := range req.Cosigned {
			_, err := note.Open([]byte(n), note.VerifierList(wV))
			rep.Cosigned = append(rep.Cosigned, err == nil)
		}
	}
	for _, c := range req.Consistency {
		err := proof.VerifyConsistency(rfc6962.DefaultHasher, c.Size1, c.Size2, c.Proof, c.Root1, c.Root2)
		rep.Consistency = append(rep.Consistency, err == nil)
	}
	for _, i := range req.Inclusion {
		err := proof.VerifyInclusion(rfc6962.DefaultHasher, i.Index, i.Size, i.Leaf, i.Proof, i.Root)
		rep.Inclusion = append(rep.Inclusion, err == nil)
	}
	if len(req.Notes) > 0 {
		skey, vkey, err := note.GenerateKey(rand.Reader, "go-witness.example/w1")
		if err == nil {
			signer, err2 := fnote.NewSignerForCosignatureV1(skey)
			opened, err3 := note.Open([]byte(req.Notes[0]), note.VerifierList(logV))
			if err2 == nil && err3 == nil {
				cosigned, err4 := note.Sign(opened, signer)
				if err4 == nil {
					rep.GoCosignedNote = string(cosigned)
					rep.GoWitnessVKey, _ = fnote.VKeyToCosignatureV1(vkey)
				}
			}
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		os.Exit(2)
	}
}
