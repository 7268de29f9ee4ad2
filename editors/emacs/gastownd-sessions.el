;;; gastownd-sessions.el --- gastownd: sessions, digests and who  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The gastownd authors

;; Author: The gastownd authors
;; SPDX-License-Identifier: MIT

;; This file is not part of GNU Emacs.

;;; Commentary:

;; The sessions list (`gastownd-sessions'), the digest buffer
;; (`gastownd-digest') and who touched an issue (`gastownd-who').
;; Part of the gastownd package: load it with (require 'gastownd).

;;; Code:

(require 'cl-lib)
(require 'subr-x)
(require 'tabulated-list)
(require 'gastownd-core)

(declare-function term-mode "term" ())
(declare-function term-char-mode "term" ())

;;;; Sessions

(defconst gastownd-sessions-buffer-name "*gastownd-sessions*"
  "The name of the sessions buffer.")

(defconst gastownd-digest-buffer-name "*gastownd-digest*"
  "The name of the one buffer that shows a session's digest.")

(defconst gastownd--log-limit 500
  "Lines shown of a session known only from the log.")

(defvar gastownd--session-ids nil
  "Session ids seen in the answers to `sessions', for completion.")

(defvar-local gastownd--sessions-rows nil
  "The rows of the sessions buffer, by session id (a hash table).")

(defvar-local gastownd--sessions-state nil
  "The state the sessions buffer shows, or nil for all.")

(defvar-local gastownd--sessions-actor nil
  "The actor substring the sessions buffer shows, or nil for all.")

(defvar-local gastownd--sessions-hide-logged nil
  "Non-nil when the sessions buffer hides the `logged' sessions.")

(defvar-local gastownd--sessions-watch nil
  "The connection that refreshes the sessions buffer on session pushes.")

(defvar gastownd-sessions-mode-map
  (let ((map (make-sparse-keymap)))
    (set-keymap-parent map tabulated-list-mode-map)
    (define-key map (kbd "RET") #'gastownd-sessions-digest)
    (define-key map (kbd "s") #'gastownd-sessions-seance)
    (define-key map (kbd "f") #'gastownd-sessions-cycle-state)
    (define-key map (kbd "a") #'gastownd-sessions-filter-actor)
    (define-key map (kbd "L") #'gastownd-sessions-toggle-logged)
    (define-key map (kbd "w") #'gastownd-sessions-copy-id)
    map)
  "Keymap of `gastownd-sessions-mode'.")

(define-derived-mode gastownd-sessions-mode tabulated-list-mode
  "gastownd-sessions"
  "The sessions of a town, the most recently started first.
\\<gastownd-sessions-mode-map>\\[gastownd-sessions-digest] opens the session
at point: its digest, its wisp while it is open, or what the log knows of it;
\\[gastownd-sessions-seance] resumes it with `gastownctl seance';
\\[revert-buffer] refreshes.
\\[gastownd-sessions-cycle-state] filters by state,
\\[gastownd-sessions-filter-actor] by actor,
\\[gastownd-sessions-toggle-logged] hides the logged ones.
The list refreshes itself when a session starts or ends.

\\{gastownd-sessions-mode-map}"
  (setq tabulated-list-format
        (vector (list "Last start"
                      (length (format-time-string gastownd-date-format 0)) t)
                (list "Session" 8 nil)
                (list "State" 9 t)
                (list "Actor" 28 t)
                (list "Ended"
                      (length (format-time-string gastownd-date-format 0)) t)
                (list "Took" 7 nil)
                (list "Steps" 5 nil)
                (list "End" 17 t)
                (list "Topic" 0 nil)))
  (setq tabulated-list-padding 1)
  (setq-local truncate-lines t)
  (setq-local revert-buffer-function #'gastownd--sessions-refresh)
  (add-hook 'kill-buffer-hook #'gastownd--sessions-unwatch nil t)
  (tabulated-list-init-header))

(defun gastownd--duration (seconds)
  "SECONDS as 42s, 3m 5s, 2h 10m or 3d 4h."
  (let* ((seconds (floor seconds))
         (days (/ seconds 86400)) (hours (/ (% seconds 86400) 3600))
         (minutes (/ (% seconds 3600) 60)) (secs (% seconds 60)))
    (cond ((> days 0) (format "%dd %dh" days hours))
          ((> hours 0) (format "%dh %dm" hours minutes))
          ((> minutes 0) (format "%dm %ds" minutes secs))
          (t (format "%ds" secs)))))

(defun gastownd--took (start end)
  "The time from START to END (timestamps), or \"\"."
  (let ((from (and (stringp start) (ignore-errors (parse-iso8601-time-string start))))
        (to (and (stringp end) (ignore-errors (parse-iso8601-time-string end)))))
    (if (and from to)
        (gastownd--duration (max 0 (float-time (time-subtract to from))))
      "")))

(defun gastownd--state-face (state)
  "The face of the session STATE."
  (pcase state
    ("open" 'gastownd-state-open)
    ("squashed" 'gastownd-state-squashed)
    ("abandoned" 'gastownd-state-abandoned)
    (_ 'gastownd-state-logged)))

(defun gastownd--session-entry (row)
  "A `tabulated-list-entries' entry for ROW, a session, by its id.
The list is sorted by the last start, which is what it shows.  A session
that ran on another node shows it: actor@node."
  (let ((started (or (alist-get 'last_started_at row)
                     (alist-get 'started_at row)))
        (ended (alist-get 'ended_at row)))
    (list (alist-get 'session_id row)
          (vector (gastownd--face (gastownd--local-time started
                                                        gastownd-date-format)
                                  'gastownd-time)
                  (gastownd--face (gastownd--short-id (alist-get 'session_id row))
                                  'gastownd-id)
                  (gastownd--face (or (alist-get 'state row) "?")
                                  (gastownd--state-face (alist-get 'state row)))
                  (gastownd--face (gastownd--who (alist-get 'actor row)
                                                 (gastownd--remote-node row))
                                  'gastownd-actor)
                  (if ended
                      (gastownd--face (gastownd--local-time ended
                                                            gastownd-date-format)
                                      'gastownd-time)
                    "")
                  (gastownd--took started ended)
                  (gastownd--step-count row)
                  (or (alist-get 'end_reason row) "")
                  (gastownd--short (gastownd--about row))))))

(defun gastownd--step-count (row)
  "The steps of the sessions ROW as text: \"\" for a session known only from
the log, or from a daemon too old to count them."
  (let ((count (alist-get 'step_count row)))
    (if (natnump count) (number-to-string count) "")))

(defun gastownd--about (row)
  "What the sessions ROW is about: its topic, or its digest's summary line.
For an open session, what it has changed so far comes first."
  (let ((about (or (alist-get 'topic row) (alist-get 'summary row) ""))
        (changed (alist-get 'changed row)))
    (if (and changed (not (string-empty-p changed)))
        (concat changed (if (string-empty-p about) "" (concat " · " about)))
      about)))

(defun gastownd--changes (wisp)
  "An open session's changes so far, from its WISP: \"2 steps: closed gt-1\"."
  (let ((count (or (alist-get 'step_count wisp) (length (alist-get 'steps wisp))))
        parts)
    (dolist (step (alist-get 'steps wisp))
      (let ((verb (cdr (assoc (alist-get 'kind step)
                              '(("issue_closed" . "closed")
                                ("issue_created" . "created")
                                ("issue_reopened" . "reopened")
                                ("commit" . "commit")))))
            (ref (alist-get 'ref step)))
        (when (and verb (stringp ref))
          (cl-pushnew (concat verb " " ref) parts :test #'equal))))
    (if (= count 0)
        ""
      (concat (format "%d step%s" count (if (= count 1) "" "s"))
              (when parts (concat ": " (string-join (nreverse parts) ", ")))))))

(defconst gastownd--open-changes 20
  "Open sessions whose changes the sessions buffer asks for (one wisp each).")

(defun gastownd--sessions-annotate (buffer rows)
  "Ask for the wisps of the open ROWS of BUFFER, and show their changes."
  (let ((asked 0))
    (dolist (row rows)
      (when (and (equal (alist-get 'state row) "open")
                 (< asked gastownd--open-changes))
        (cl-incf asked)
        (gastownd--request
         (with-current-buffer buffer (gastownd--town-root))
         "wisp" (list :session (alist-get 'session_id row))
         (lambda (wisp _err)
           (when (and wisp (buffer-live-p buffer))
             (with-current-buffer buffer
               (let ((shown (gethash (alist-get 'session_id row)
                                     gastownd--sessions-rows)))
                 (when (eq shown row)
                   (setcdr (last row) (list (cons 'changed (gastownd--changes wisp))))
                   (setq tabulated-list-entries
                         (mapcar (lambda (entry)
                                   (if (equal (car entry) (alist-get 'session_id row))
                                       (gastownd--session-entry row)
                                     entry))
                                 tabulated-list-entries))
                   (tabulated-list-print t)))))))))))

(defun gastownd--sessions-mode-name ()
  "The sessions buffer's mode name, which shows its filters."
  (let ((filters (delq nil (list (and gastownd--sessions-state
                                      (concat "state=" gastownd--sessions-state))
                                 (and gastownd--sessions-actor
                                      (concat "actor=" gastownd--sessions-actor))
                                 (and gastownd--sessions-hide-logged
                                      "logged hidden")))))
    (concat "gastownd-sessions"
            (when filters (format "[%s]" (string-join filters " "))))))

(defun gastownd--sessions-show (result err)
  "Show RESULT, the answer to `sessions', or ERR in the current buffer.
Point stays on its session (the entries are keyed by session id)."
  (setq mode-name (gastownd--sessions-mode-name))
  (force-mode-line-update)
  (if (not err)
      (let* ((all (alist-get 'sessions result))
             (rows (if gastownd--sessions-hide-logged
                       (cl-remove-if (lambda (row)
                                       (equal (alist-get 'state row) "logged"))
                                     all)
                     all)))
        (setq gastownd--sessions-rows (make-hash-table :test #'equal))
        (dolist (row all)
          (cl-pushnew (alist-get 'session_id row) gastownd--session-ids
                      :test #'equal))
        (dolist (row rows)
          (puthash (alist-get 'session_id row) row gastownd--sessions-rows))
        (setq tabulated-list-entries (mapcar #'gastownd--session-entry rows))
        (tabulated-list-print t)
        (gastownd--sessions-annotate (current-buffer) rows))
    (setq tabulated-list-entries nil)
    (tabulated-list-print)
    (let ((inhibit-read-only t))
      (insert "-- " (gastownd--describe "sessions" err) "\n"))
    (gastownd--notify "%s" (gastownd--describe "sessions" err))))

(defun gastownd--sessions-refresh (&rest _)
  "Fetch the sessions again, asynchronously (every node's, when federated)."
  (let ((buffer (current-buffer)))
    (gastownd--request
     (gastownd--town-root) "sessions"
     (append (list :limit gastownd-sessions-limit)
             (when gastownd--sessions-state (list :state gastownd--sessions-state))
             ;; `role' filters on a substring of the actor.
             (when gastownd--sessions-actor (list :role gastownd--sessions-actor)))
     (lambda (result err)
       (when (buffer-live-p buffer)
         (with-current-buffer buffer
           (gastownd--sessions-show result err)))))))

(defun gastownd-sessions-cycle-state ()
  "Show the sessions of the next state: all, open, squashed, abandoned, logged."
  (interactive)
  (setq gastownd--sessions-state
        (cadr (member gastownd--sessions-state
                      '(nil "open" "squashed" "abandoned" "logged" nil))))
  (gastownd--sessions-refresh))

(defun gastownd-sessions-filter-actor (actor)
  "Show only the sessions whose actor contains ACTOR (blank: all)."
  (interactive (list (read-string "Actor (blank for all): "
                                  gastownd--sessions-actor)))
  (setq gastownd--sessions-actor (unless (string-empty-p actor) actor))
  (gastownd--sessions-refresh))

(defun gastownd-sessions-toggle-logged ()
  "Hide or show the sessions known only from the log."
  (interactive)
  (setq gastownd--sessions-hide-logged (not gastownd--sessions-hide-logged))
  (gastownd--sessions-refresh))

(defun gastownd-sessions-copy-id ()
  "Copy the full id of the session at point to the kill ring."
  (interactive)
  (let ((row (gastownd--session-at-point)))
    (when row
      (kill-new (alist-get 'session_id row))
      (message "%s" (alist-get 'session_id row)))))

(defun gastownd--sessions-unwatch ()
  "Stop refreshing this sessions buffer on pushes."
  (when (processp gastownd--sessions-watch)
    (gastownd--close gastownd--sessions-watch))
  (setq gastownd--sessions-watch nil))

(defun gastownd--sessions-watch (buffer root)
  "Refresh BUFFER when a session of ROOT starts or ends, while it lives.
A subscription of its own to session_start and session_end; it reconnects
a second after it drops."
  (with-current-buffer buffer
    (unless gastownd--sessions-watch
      (setq gastownd--sessions-watch 'connecting)
      (let ((pending nil))
        (gastownd--socket
         root
         (lambda (path err)
           (when (buffer-live-p buffer)
             (with-current-buffer buffer
               (if err
                   (setq gastownd--sessions-watch nil)
                 (let ((process
                        (gastownd--open
                         path
                         (lambda (frame)
                           (when (and (equal (alist-get 'push frame) "event")
                                      (not pending) (buffer-live-p buffer))
                             (setq pending t)
                             (run-at-time
                              0.1 nil
                              (lambda ()
                                (setq pending nil)
                                (when (buffer-live-p buffer)
                                  (with-current-buffer buffer
                                    (gastownd--sessions-refresh)))))))
                         (lambda (_err)
                           (when (buffer-live-p buffer)
                             (with-current-buffer buffer
                               (setq gastownd--sessions-watch nil))
                             (run-at-time
                              1 nil
                              (lambda ()
                                (when (buffer-live-p buffer)
                                  (gastownd--sessions-watch buffer root)))))))))
                   (setq gastownd--sessions-watch process)
                   (when process
                     (gastownd--send process (gastownd--hello))
                     (gastownd--send
                      process
                      (list :op "subscribe" :id 1 :all_nodes t
                            :types ["session_start" "session_end"])))))))))))))

;;;###autoload
(defun gastownd-sessions ()
  "List the town's sessions in the buffer *gastownd-sessions*.
In a federated town, every node's."
  (interactive)
  (let ((root (gastownd--town-root))
        (buffer (get-buffer-create gastownd-sessions-buffer-name)))
    (with-current-buffer buffer
      (unless (derived-mode-p 'gastownd-sessions-mode)
        (gastownd-sessions-mode))
      (setq gastownd--buffer-town (or root 'default))
      (gastownd--sessions-refresh)
      (gastownd--sessions-watch buffer root))
    (pop-to-buffer-same-window buffer)
    buffer))

(defun gastownd--session-at-point ()
  "The session row at point, or nil after saying there is none."
  (or (and gastownd--sessions-rows
           (gethash (tabulated-list-get-id) gastownd--sessions-rows))
      (progn (gastownd--notify "no session on this line") nil)))

(defun gastownd--lines-text (text)
  "Multi-line TEXT (a digest's summary) with each line through `gastownd--text'."
  (mapconcat #'gastownd--text (split-string (or text "") "\n") "\n"))

(defun gastownd--digest-text (digest)
  "DIGEST (an alist) as text: its title, then its summary.
Every field goes through `gastownd--text': a newline in one makes no line."
  (concat "# " (gastownd--text
                (or (alist-get 'title digest)
                    (format "Digest: %s" (alist-get 'session_id digest))))
          "\n\ndigest " (gastownd--text (or (alist-get 'digest_id digest) "?"))
          (if (gastownd--remote-node digest)
              (concat ", node " (gastownd--text (alist-get 'node digest)))
            "")
          "\n\n" (gastownd--lines-text
                  (string-trim-right (or (alist-get 'summary digest) "")))
          "\n"))

(defun gastownd--step-line (number step)
  "Return STEP as line NUMBER of a wisp's step list."
  (format "%d. **[%s]** %s %s\n" number (gastownd--text (alist-get 'kind step))
          (gastownd--text (or (alist-get 'at step) ""))
          (gastownd--text (or (alist-get 'ref step)
                              (gastownd--summary (alist-get 'payload step))))))

(defun gastownd--wisp-text (wisp)
  "WISP (an alist), an open session with no digest yet, as text."
  (let ((steps (alist-get 'steps wisp)))
    (concat
     (format "# Open session %s\n\n" (gastownd--text (alist-get 'session_id wisp)))
     (format "no digest yet: the session is still open (segment %s)\n\n"
             (or (alist-get 'segment wisp) 1))
     (format "**Actor**: %s\n**Topic**: %s\n" (gastownd--text (alist-get 'actor wisp))
             (gastownd--text (or (alist-get 'topic wisp) "")))
     (format "**Started**: %s\n**Last activity**: %s\n"
             (gastownd--text (alist-get 'started_at wisp))
             (gastownd--text (alist-get 'last_activity_at wisp)))
     (format "**Steps**: %s\n\n" (or (alist-get 'step_count wisp)
                                     (length steps)))
     (string-join (cl-loop for step in steps
                           for number from 1
                           collect (gastownd--step-line number step))))))

(defun gastownd--log-text (id row events)
  "What the log knows of session ID: its sessions ROW and its EVENTS."
  (concat
   (format "# Logged session %s\n\n" (gastownd--text id))
   "known only from gt's lines in the log: no wisp, no digest\n\n"
   (mapconcat (lambda (fact)
                (if (cdr fact) (format "**%s**: %s\n" (car fact) (gastownd--text (cdr fact))) ""))
              (list (cons "Actor" (alist-get 'actor row))
                    (cons "First start" (alist-get 'started_at row))
                    (cons "Last start" (alist-get 'last_started_at row))
                    (cons "Starts" (alist-get 'starts row))
                    (cons "Ended" (alist-get 'ended_at row))
                    (cons "End" (alist-get 'end_reason row))
                    (cons "Topic" (alist-get 'topic row)))
              "")
   (format "\n## %d line%s\n\n" (length events) (if (= 1 (length events)) "" "s"))
   (mapconcat (lambda (event) (concat (gastownd--event-line event) "\n"))
              events "")))

(defvar-local gastownd--refresh-function nil
  "What \\[revert-buffer] does in a digest or who buffer.")

(defvar gastownd-view-mode-map
  (let ((map (make-sparse-keymap)))
    (set-keymap-parent map special-mode-map)
    (define-key map (kbd "RET") #'gastownd-view-enter)
    map)
  "Keymap of `gastownd-view-mode'.")

(define-derived-mode gastownd-view-mode special-mode "gastownd"
  "A digest, a wisp, a session's log lines, or who touched an issue.
\\<gastownd-view-mode-map>\\[revert-buffer] asks the daemon again;
\\[gastownd-view-enter] on a who line opens its session, on an issue id
shows who touched it.

\\{gastownd-view-mode-map}"
  (setq-local truncate-lines t)
  (setq-local revert-buffer-function
              (lambda (&rest _)
                (if gastownd--refresh-function
                    (funcall gastownd--refresh-function)
                  (gastownd--notify "nothing to refresh here")))))

(defun gastownd-view-enter ()
  "On a who line, open its session; on an issue id, show who touched it."
  (interactive)
  (let ((record (get-text-property (line-beginning-position) 'gastownd-record))
        (event (get-text-property (line-beginning-position) 'gastownd-event))
        (issue (gastownd--issue-at-point)))
    (cond (record
           (gastownd--show-session (gastownd--town-root)
                                   (alist-get 'session_id record)
                                   (if (alist-get 'digest_id record) "ended" "open")))
          (issue (gastownd-who issue))
          ((and event (consp (alist-get 'payload event))
                (alist-get 'session_id (alist-get 'payload event)))
           (gastownd--show-session (gastownd--town-root)
                                   (alist-get 'session_id (alist-get 'payload event))
                                   nil))
          (t (gastownd--notify "nothing to open on this line")))))

(defun gastownd--show-text (name text root &optional refresh)
  "Show TEXT, read-only, in the buffer NAME, for the town ROOT.
REFRESH, a function, is what \\[revert-buffer] does there."
  (let ((buffer (get-buffer-create name)))
    (with-current-buffer buffer
      (unless (derived-mode-p 'gastownd-view-mode) (gastownd-view-mode))
      (let ((inhibit-read-only t))
        (erase-buffer)
        (insert text)
        (goto-char (point-min)))
      (setq gastownd--refresh-function refresh)
      (setq gastownd--buffer-town (or root 'default)))
    buffer))

(defun gastownd--show-session (root id hint &optional row)
  "Show session ID of ROOT in the digest buffer.
HINT is its state if known (\"open\", \"logged\", else ended), ROW its
sessions row.  An ended session shows its digest, an open one its wisp, and
one with neither what the log knows of it (its lines, by a query)."
  (let ((refresh (lambda () (gastownd--show-session root id hint row))))
    (cl-labels
        ((show (text)
           (pop-to-buffer-same-window
            (gastownd--show-text gastownd-digest-buffer-name text root refresh)))
         (log ()
           (gastownd--request
            ;; :archive: an old session's lines may have been pruned.
            root "query" (list :session id :limit gastownd--log-limit
                               :oldest_first t :archive t)
            (lambda (result err)
              (if err
                  (gastownd--notify "%s" (gastownd--describe "query" err))
                (show (gastownd--log-text id row (alist-get 'events result)))))))
         (ask (op fields render fallback)
           (gastownd--request
            root op fields
            (lambda (result err)
              (cond ((and err fallback (equal (plist-get err :code) "not_found"))
                     (funcall fallback))
                    (err (gastownd--notify "%s" (gastownd--describe op err)))
                    (t (show (funcall render result)))))))
         (wisp (fallback)
           (ask "wisp" (list :session id) #'gastownd--wisp-text fallback))
         (digest (fallback)
           (ask "digest" (list :ref id) #'gastownd--digest-text fallback)))
      (pcase hint
        ("logged" (log))
        ("open" (wisp (lambda () (digest #'log))))
        (_ (digest (lambda () (wisp #'log))))))))

(defun gastownd-sessions-digest ()
  "Open the session at point in the digest buffer.
Its digest; for an open session, its wisp so far; for a session known only
from the log, its lines there.  On an issue id, show who touched it."
  (interactive)
  (let ((issue (gastownd--issue-at-point)))
    (if issue
        (gastownd-who issue)
      (let ((row (gastownd--session-at-point)))
        (when row
          (gastownd--show-session (gastownd--town-root)
                                  (alist-get 'session_id row)
                                  (alist-get 'state row) row))))))

;;;###autoload
(defun gastownd-digest (id)
  "Open session ID (or a unique prefix) in the digest buffer.
Interactively, with completion of the session ids seen so far."
  (interactive
   (list (completing-read "Session: " gastownd--session-ids nil nil)))
  (gastownd--show-session (gastownd--town-root) id nil))

(defun gastownd-sessions-seance ()
  "Resume the session at point with `gastownctl seance', in a terminal."
  (interactive)
  (let ((row (gastownd--session-at-point))
        (root (gastownd--town-root)))
    (when row
      (require 'term)
      (let* ((id (alist-get 'session_id row))
             (command (append gastownd-gastownctl-command
                              (when root (list "--town-root" root))
                              (list "seance" id)))
             (default-directory (gastownd--local-directory)))
        (condition-case err
            (let ((buffer (apply #'make-term
                                 (format "gastownd-seance %s"
                                         (gastownd--short-id id))
                                 (car command) nil (cdr command))))
              (with-current-buffer buffer
                (term-mode)
                (term-char-mode))
              (pop-to-buffer buffer)
              buffer)
          (error (gastownd--notify "cannot run the seance: %s"
                                   (error-message-string err))))))))

;;;; Who

(defconst gastownd-who-buffer-name "*gastownd-who*"
  "The name of the buffer `gastownd-who' answers in.")

;;;###autoload
(defun gastownd-who (issue)
  "Show which sessions closed, created or updated ISSUE.
Interactively, ISSUE is the Beads id at point; with a prefix argument, or
with no id at point, it is asked for."
  (interactive
   (let ((at (gastownd--issue-at-point)))
     (list (if (and at (not current-prefix-arg))
               at
             (read-string (format-prompt "Issue" at) nil nil at)))))
  (if (or (null issue) (string-empty-p issue))
      (gastownd--notify "no issue id at point (like gt-a1b2)")
    (let ((root (gastownd--town-root)))
      (gastownd--request
       root "attribution" (list :issue issue)
       (lambda (result err)
         (if err
             (gastownd--notify "%s" (gastownd--describe "attribution" err))
           (display-buffer
            (gastownd--show-text
             gastownd-who-buffer-name
             (concat (string-join
                      (gastownd--attribution-lines
                       (or (alist-get 'issue result) issue)
                       (alist-get 'records result))
                      "\n")
                     "\n")
             root
             (lambda ()
               (let ((default-directory (or root default-directory)))
                 (gastownd-who issue)))))))))))

(provide 'gastownd-sessions)
;;; gastownd-sessions.el ends here
