;;; gastownd.el --- Gas Town event feed, sessions and attribution  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The gastownd authors

;; Author: The gastownd authors
;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1"))
;; Keywords: tools, processes
;; SPDX-License-Identifier: MIT

;; This file is not part of GNU Emacs.

;;; Commentary:

;; gastownd owns the event log and the agent sessions of a Gas Town
;; workspace (a "town").  This package talks to it over its Unix socket
;; (newline-delimited JSON) without ever blocking Emacs: every connection
;; is asynchronous and every request has a timeout.
;;
;;   M-x gastownd-feed       the live event feed in *gastownd-feed*
;;   M-x gastownd-sessions   the sessions; RET: the session, s: seance,
;;                           f, a, L: filters, g: refresh
;;   M-x gastownd-digest     a session by id, in *gastownd-digest*
;;   M-x gastownd-who        who closed, created or updated the issue at point
;;   M-x gastownd-mode-line-mode   "gastownd: 2 open" or "gastownd: down"
;;
;; In every buffer of the package, ? lists the keys, and RET on an issue
;; id shows who touched it.
;;
;; The package is split by feature: gastownd-core.el (settings, towns,
;; sockets, connections, text), gastownd-feed.el, gastownd-sessions.el
;; (sessions, digests, who) and gastownd-mode-line.el.
;;
;; The socket path comes from `gastownctl sockname' (see
;; `gastownd-gastownctl-command'), run once per town.  The town is the one
;; around the buffer's directory, else GT_TOWN_ROOT, else gastownctl's
;; default.  See docs/editors.md in the gastownd repository.

;;; Code:

(require 'gastownd-core)
(require 'gastownd-feed)
(require 'gastownd-sessions)
(require 'gastownd-mode-line)

(provide 'gastownd)
;;; gastownd.el ends here
