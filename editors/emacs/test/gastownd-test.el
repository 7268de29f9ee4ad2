;;; gastownd-test.el --- ERT tests of gastownd.el  -*- lexical-binding: t; -*-

;;; Commentary:

;; emacs --batch -Q -L editors/emacs -l editors/emacs/test/gastownd-test.el \
;;       -f ert-run-tests-batch-and-exit
;;
;; The gastownd-test-offline-* tests need no daemon.  The others run against a real
;; daemon in a temporary town, which tests/editors/ (pytest) starts; they read
;; GASTOWND_TEST_TOWN, GASTOWND_TEST_PYTHON and GASTOWND_TEST_CTL, and act on the town
;; through tests/editors/townctl.py (the real gastownctl, hook and daemon).  Run one
;; test per Emacs and town, as pytest does: its selector is the test's name.

;;; Code:

(require 'ert)
(require 'cl-lib)
(require 'gastownd)

(defconst gastownd-test-session "5e55a0b1-2c3d-4e5f-8a9b-0c1d2e3f4a5b")
(defconst gastownd-test-open-session "0be11a2b-3c4d-4e5f-9a0b-1c2d3e4f5a6b")
(defconst gastownd-test-actor "gastown/polecats/nux")

;;;; Helpers

(defvar gastownd-test--messages nil
  "Every message the package gave, newest first.")

(defun gastownd-test--record (format-string &rest args)
  "Record the message FORMAT-STRING with ARGS, as `gastownd--notify' shows it."
  (push (concat "gastownd: " (apply #'format format-string args))
        gastownd-test--messages))

(advice-add 'gastownd--notify :before #'gastownd-test--record)

(defun gastownd-test--messages ()
  "The messages given so far, oldest first."
  (reverse gastownd-test--messages))

(defun gastownd-test--wait (what predicate &optional timeout)
  "Run the event loop until PREDICATE is true; fail saying WHAT after TIMEOUT s."
  (let ((deadline (+ (float-time) (or timeout 5.0))))
    (while (and (not (funcall predicate)) (< (float-time) deadline))
      (accept-process-output nil 0.01))
    (unless (funcall predicate)
      (ert-fail (format "timed out after %s s waiting for %s" (or timeout 5.0) what)))))

(defun gastownd-test--sleep (seconds)
  "Run the event loop for SECONDS."
  (let ((deadline (+ (float-time) seconds)))
    (while (< (float-time) deadline)
      (accept-process-output nil 0.01))))

(defun gastownd-test--ctl (&rest args)
  "Act on the test town: tests/editors/townctl.py with ARGS (blocking, on purpose)."
  (let ((python (getenv "GASTOWND_TEST_PYTHON"))
        (ctl (getenv "GASTOWND_TEST_CTL"))
        (town (getenv "GASTOWND_TEST_TOWN")))
    (unless (and python ctl town)
      (ert-fail "run through pytest (tests/editors): GASTOWND_TEST_* unset"))
    (with-temp-buffer
      (let ((status (apply #'call-process python nil t nil ctl "--town" town args)))
        (unless (eql status 0)
          (ert-fail (format "townctl %S failed (%s): %s" args status (buffer-string))))))))

(defun gastownd-test--lines (buffer)
  "The lines of BUFFER."
  (with-current-buffer buffer
    (split-string (buffer-substring-no-properties (point-min) (point-max)) "\n" t)))

(defun gastownd-test--count (buffer text)
  "How many lines of BUFFER contain TEXT."
  (cl-count-if (lambda (line) (string-search text line)) (gastownd-test--lines buffer)))

(defun gastownd-test--has (buffer text)
  "Whether a line of BUFFER contains TEXT."
  (and (buffer-live-p buffer) (> (gastownd-test--count buffer text) 0)))

(defun gastownd-test--line (buffer text)
  "The first line of BUFFER containing TEXT."
  (cl-find-if (lambda (line) (string-search text line)) (gastownd-test--lines buffer)))

(defun gastownd-test--once-each (buffer texts)
  "Assert each of TEXTS is on exactly one line of BUFFER, in this order."
  (let ((lines (gastownd-test--lines buffer))
        (previous -1))
    (dolist (text texts)
      (let ((found (cl-loop for line in lines for i from 0
                            when (string-search text line) collect i)))
        (should (equal (list text (length found)) (list text 1)))
        (should (> (car found) previous))
        (setq previous (car found))))))

(defun gastownd-test--no-errors ()
  "Assert every message was one line and no error was signaled."
  (dolist (message gastownd-test--messages)
    (should-not (string-search "\n" message))
    (should-not (string-search "internal error" message))))

(defmacro gastownd-test--with-fast-settings (&rest body)
  "Run BODY with quick reconnects and a fresh package state."
  (declare (indent 0) (debug t))
  `(let ((gastownd-reconnect-min 0.05)
         (gastownd-reconnect-max 0.2)
         (gastownd-test--messages nil))
     (unwind-protect
         (progn ,@body)
       (gastownd-feed-stop)
       (when gastownd-mode-line-mode (gastownd-mode-line-mode -1)))))

(defun gastownd-test--open-feed (&optional types all-nodes)
  "Open the feed with TYPES and ALL-NODES and wait until it is subscribed."
  (let ((buffer (gastownd-feed types all-nodes)))
    (gastownd-test--wait "the feed to subscribe"
                         (lambda ()
                           (and gastownd--the-feed
                                (gastownd--feed-ever-up gastownd--the-feed)
                                (not (gastownd--feed-down gastownd--the-feed)))))
    buffer))

(defun gastownd-test--event-lines (buffer)
  "The event lines of the feed BUFFER (not its own `-- ' lines)."
  (cl-remove-if (lambda (line) (string-prefix-p "-- " line))
                (gastownd-test--lines buffer)))

(defun gastownd-test--tempdir ()
  "A new temporary directory, its true name."
  (file-truename (make-temp-file "gastownd-test-" t)))

;;;; Offline: no daemon

(ert-deftest gastownd-test-offline-format-time ()
  (should (equal (gastownd--local-time "2026-11-25T01:50:47Z" "%H:%M:%S")
                 (format-time-string "%H:%M:%S" 1795571447)))
  (should (equal (gastownd--local-time "2026-11-25T02:50:47+01:00" "%s") "1795571447"))
  (should (equal (gastownd--local-time "garbage" "%H:%M:%S") "garbage"))
  (should (equal (gastownd--local-time nil "%H:%M:%S") "?")))

(ert-deftest gastownd-test-offline-format-rows ()
  (let* ((event (gastownd--decode
                 (concat "{\"ts\":\"2026-11-25T01:50:47Z\",\"type\":\"sling\",\"actor\":\"mayor\","
                         "\"payload\":{\"target\":\"gastown/polecats/nux\",\"bead\":\"gt-42\","
                         "\"n\":3,\"note\":\"two\\nlines\"}}")))
         (line (gastownd--event-line event)))
    ;; Not from today: the date is shown.
    (should (string-match-p
             (concat "\\`11-25 [0-9][0-9]:[0-9][0-9]  sling +  mayor +  "
                     "bead=gt-42 n=3 note=two⏎lines target=gastown/polecats/nux\\'")
             line))
    (should (string-match-p "\\`[0-9][0-9]:[0-9][0-9]:[0-9][0-9]     sling"
                            (gastownd--event-line
                             (cons (cons 'ts (format-time-string "%FT%TZ" nil t)) event))))
    (should-not (string-search "@" (gastownd--event-line event "laptop" "laptop")))
    (should (string-search "mayor@laptop" (gastownd--event-line event "laptop")))
    (should (string-search "mayor@tower" (gastownd--event-line (cons '(node . "tower") event))))
    (should (string-match-p "\\`\\? +x" (gastownd--event-line '((type . "x"))))))
  ;; No repeated fields: role = actor, actor_pid = actor-pid, the full session id.
  (should (equal (gastownd--summary '((role . "gastown/witness")
                                      (actor_pid . "gastown/witness-21180")
                                      (session_id . "2d777fd1-4c9a-4a15-b500-2b073cc60086")
                                      (topic . "patrol"))
                                    "gastown/witness")
                 "pid=21180 session_id=2d777fd1 topic=patrol"))
  (should (equal (gastownd--short "abcdef" 3) "ab…"))
  (let ((entry (gastownd--session-entry
                '((session_id . "7f3c2a10-5b8e-4d2f-9a61-0c4e8b2d9f11")
                  (started_at . "2026-01-20T01:50:47Z")
                  (last_started_at . "2026-11-25T01:50:47Z")
                  (ended_at . "2026-11-25T03:00:00Z") (state . "squashed")
                  (actor . "gastown/polecats/nux") (end_reason . "done")
                  (topic . "fix gt-42") (node . "laptop")
                  (remote . t) (step_count . 3)))))
    (should (equal (aref (cadr entry) 0) (format-time-string "%Y-%m-%d %H:%M" 1795571447)))
    (should (equal (mapcar #'substring-no-properties
                           (append (cl-subseq (cadr entry) 1 4) (cl-subseq (cadr entry) 5) nil))
                   '("7f3c2a10" "squashed" "gastown/polecats/nux@laptop"
                     "1h 9m" "3" "done" "fix gt-42")))
    (should (eq (get-text-property 0 'font-lock-face (aref (cadr entry) 2))
                'gastownd-state-squashed)))
  (should (equal (aref (cadr (gastownd--session-entry '((actor . "max") (node . "vm")))) 3)
                 "max"))
  ;; A session known only from the log has no step count: an empty cell, not "nil".
  (should (equal (aref (cadr (gastownd--session-entry '((actor . "max")))) 6) ""))
  (let ((lines (gastownd--attribution-lines
                "gt-42"
                '(((session_id . "7f3c2a10-5b8e") (action . "reopened")
                   (at . "2026-11-25T01:50:47Z") (actor . "nux") (digest_id . "dg-1"))
                  ((session_id . "8d1e6c2a-4f0b") (action . "created")
                   (at . "2026-11-25T01:50:47Z") (actor . "gastown/crew/max"))))))
    (should (equal (car lines) "gt-42: 2 changes"))
    ;; Aligned: the widest action and actor set the columns.
    (should (string-match-p "\\`reopened  .*  7f3c2a10  nux               digest dg-1\\'"
                            (nth 1 lines)))
    (should (string-match-p "\\`created   .*  8d1e6c2a  gastown/crew/max  (session open)\\'"
                            (nth 2 lines))))
  (should (equal (gastownd--attribution-lines "gt-1" nil)
                 '("no session is recorded as touching gt-1"))))

(ert-deftest gastownd-test-offline-hostile-views ()
  ;; Any writer's text in a wisp, a digest or a logged session: a newline in a field
  ;; makes no line of the view (here a forged "**Steps**" line), no control character
  ;; or bidi override goes in raw; a summary keeps its own lines.
  (let* ((forged (concat "evil\n**Steps**: 999\e]0;owned\a" (string #x202e) "x"))
         (views
          (list (gastownd--wisp-text
                 `((session_id . "s-1") (actor . ,forged) (topic . ,forged)
                   (started_at . "2026-11-25T01:50:47Z") (last_activity_at . ,forged)
                   (step_count . 1)
                   (steps . [((kind . ,forged) (at . "t") (ref . ,forged))])))
                (gastownd--digest-text
                 `((title . ,forged) (digest_id . ,forged)
                   (summary . ,(concat "line one\n" forged))))
                (gastownd--log-text forged `((actor . ,forged) (topic . ,forged)
                                             (starts . 2))
                                    nil))))
    (dolist (text views)
      (should-not (string-match-p "[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]" text)))
    ;; The summary's lines are its own; the other fields are one line each.
    (dolist (text (list (car views) (nth 2 views)))
      (should-not (cl-some (lambda (line) (string-prefix-p "**Steps**: 999" line))
                           (split-string text "\n"))))
    (should (string-search "**Actor**: evil⏎**Steps**: 999\\u001b]0;owned" (car views)))
    (should (string-prefix-p "# evil⏎**Steps**: 999\\u001b]0;owned" (nth 1 views)))
    (should (member "line one" (split-string (nth 1 views) "\n")))))

(ert-deftest gastownd-test-offline-issue-at-point ()
  (with-temp-buffer
    (insert "closed gt-a1b2. then spotter-dov.3, and (hq-cv-4k3kg) not well GT-12")
    (cl-flet ((at (word &optional offset)
                (goto-char (point-min))
                (search-forward word)
                (goto-char (+ (match-beginning 0) (or offset 0)))
                (gastownd--issue-at-point)))
      (should (equal (at "gt-a1b2") "gt-a1b2"))
      (should (equal (at "gt-a1b2" 5) "gt-a1b2"))
      (should (equal (at "spotter-dov.3" 10) "spotter-dov.3"))
      (should (equal (at "hq-cv-4k3kg" 3) "hq-cv-4k3kg"))
      (should-not (at "closed"))
      (should-not (at "GT-12")))))

(ert-deftest gastownd-test-offline-town-roots ()
  (let ((base (gastownd-test--tempdir))
        (gastownd-town-root nil))
    (unwind-protect
        (progn
          (dolist (dir '("outer/mayor" "outer/inner/mayor" "outer/inner/rig/crew/max"
                         "loose/mayor" "loose/rig" "nowhere"))
            (make-directory (expand-file-name dir base) t))
          (dolist (file '("outer/mayor/town.json" "outer/inner/mayor/town.json"))
            (write-region "{}" nil (expand-file-name file base)))
          (should (equal (gastownd--find-root (expand-file-name "outer/inner/rig/crew/max" base))
                         (expand-file-name "outer" base)))
          (should (equal (gastownd--find-root (expand-file-name "loose/rig" base))
                         (expand-file-name "loose" base)))
          (should-not (gastownd--find-root (expand-file-name "nowhere" base)))
          ;; The buffer's directory wins over GT_TOWN_ROOT; elsewhere gastownctl decides.
          (with-temp-buffer
            (setq default-directory (expand-file-name "outer/inner/rig/crew/max/" base))
            (should (equal (gastownd--town-root) (expand-file-name "outer" base)))
            (setq default-directory (expand-file-name "nowhere/" base))
            (should-not (gastownd--town-root))
            (let ((gastownd-town-root (expand-file-name "loose/" base)))
              (should (equal (gastownd--town-root) (expand-file-name "loose" base))))))
      (delete-directory base t))))

(ert-deftest gastownd-test-offline-hung-daemon-times-out ()
  ;; A socket that accepts and never answers: Emacs must not wait on it.
  (let* ((dir (gastownd-test--tempdir))
         (path (expand-file-name "hung.sock" dir))
         (server (make-network-process :name "hung" :family 'local :service path
                                       :server t :noquery t
                                       :filter #'ignore :sentinel #'ignore))
         (gastownd-socket path)
         (gastownd-timeout 0.3)
         (gastownd-test--messages nil))
    (unwind-protect
        (let ((started (float-time)))
          (gastownd-sessions)
          (should (< (- (float-time) started) 0.1))
          (gastownd-test--wait "the timeout message" (lambda () gastownd-test--messages) 2)
          (let ((waited (- (float-time) started)))
            (should (<= 0.29 waited))
            (should (< waited 1.5)))
          (gastownd-test--sleep 0.4)
          (should (equal (gastownd-test--messages)
                         '("gastownd: the daemon did not answer `sessions' within 0.3 s")))
          (should (gastownd-test--has (current-buffer) "did not answer")))
      (delete-process server)
      (delete-directory dir t))))

(ert-deftest gastownd-test-offline-missing-gastownctl ()
  (let ((gastownd-gastownctl-command '("/nonexistent/gastownctl"))
        (gastownd-test--messages nil))
    (clrhash gastownd--sockets)
    (gastownd-who "gt-1")
    (gastownd-test--wait "a message" (lambda () gastownd-test--messages))
    (gastownd-test--sleep 0.2)
    (should (= 1 (length gastownd-test--messages)))
    (should (string-match-p
             "\\`gastownd: cannot run `/nonexistent/gastownctl sockname' (/nonexistent/gastownctl: not found); set `gastownd-gastownctl-command'\\'"
             (car gastownd-test--messages)))))

;;;; Live: a real daemon

(ert-deftest gastownd-test-feed-shows-new-event-within-1s ()
  (gastownd-test--with-fast-settings
    (gastownd-test--ctl "emit" "mail" "mayor" "subject=before-the-feed")
    (let ((buffer (gastownd-test--open-feed)))
      (should (equal (buffer-name buffer) "*gastownd-feed*"))
      (should (gastownd-test--has buffer "subject=before-the-feed"))
      (gastownd-test--ctl "emit" "mail" "mayor" "subject=hello-feed" "to=gastown/crew/joe")
      (let ((emitted (float-time)))
        (gastownd-test--wait "the new event in the feed"
                             (lambda () (gastownd-test--has buffer "subject=hello-feed"))
                             1.0)
        (princ (format "# emit to feed line: %.0f ms\n" (* 1000 (- (float-time) emitted)))))
      (let ((line (gastownd-test--line buffer "subject=hello-feed")))
        (should (string-match-p
                 (concat "\\`[0-9][0-9]:[0-9][0-9]:[0-9][0-9] +mail +  mayor +  "
                         "subject=hello-feed to=gastown/crew/joe\\'")
                 line))
        (should (equal line (car (last (gastownd-test--lines buffer))))))
      ;; Killing the buffer stops the feed (and closes its connection).
      (kill-buffer buffer)
      (should-not gastownd--the-feed)
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-feed-filters-types-and-all-nodes ()
  (gastownd-test--with-fast-settings
    (let ((buffer (gastownd-test--open-feed '("sling") t)))
      (should (gastownd--feed-all-nodes gastownd--the-feed))
      (should (equal (gastownd--feed-types gastownd--the-feed) '("sling")))
      (gastownd-test--ctl "emit" "mail" "mayor" "subject=not-shown")
      (gastownd-test--ctl "emit" "sling" "mayor" "bead=gt-77" "target=gastown/polecats/slit")
      (gastownd-test--wait "the sling" (lambda () (gastownd-test--has buffer "bead=gt-77")) 1.0)
      (should-not (gastownd-test--has buffer "not-shown"))
      (let ((gastownd-feed-lines 3))
        (dotimes (i 5)
          (gastownd-test--ctl "emit" "sling" "mayor" (format "bead=gt-8%d" (1+ i))))
        (gastownd-test--wait "the last sling" (lambda () (gastownd-test--has buffer "bead=gt-85")) 2.0)
        (should (= 3 (length (gastownd-test--lines buffer))))
        (should (string-search "bead=gt-83" (car (gastownd-test--lines buffer)))))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-sessions-list-hook-session-and-open-digest ()
  (gastownd-test--with-fast-settings
    (gastownd-test--ctl "hook" gastownd-test-session "start")
    (gastownd-test--ctl "hook" gastownd-test-session "close" "gt-d1g")
    (gastownd-test--ctl "hook" gastownd-test-session "end")
    (gastownd-test--ctl "hook" gastownd-test-open-session "start")
    (let* ((buffer (gastownd-sessions))
           (short (substring gastownd-test-session 0 8)))
      (should (equal (buffer-name buffer) "*gastownd-sessions*"))
      (should (eq major-mode 'gastownd-sessions-mode))
      (gastownd-test--wait "the hook's session in the list"
                           (lambda () (gastownd-test--has buffer short)))
      (should (string-match-p
               (concat short " +squashed +" (regexp-quote gastownd-test-actor) " .* +prompt_input_exit")
               (gastownd-test--line buffer short)))
      (should (string-search " open " (gastownd-test--line
                                       buffer (substring gastownd-test-open-session 0 8))))
      ;; RET on the row opens the digest.
      (with-current-buffer buffer
        (goto-char (point-min))
        (search-forward short)
        (call-interactively (key-binding (kbd "RET"))))
      (let ((name "*gastownd-digest*"))
        (gastownd-test--wait "the digest buffer"
                             (lambda () (gastownd-test--has (get-buffer name) "# Digest")))
        (let ((lines (gastownd-test--lines (get-buffer name))))
          (should (equal (car lines) (concat "# Digest: " gastownd-test-session)))
          (should (member "## Session Summary" lines))
          (should (member (concat "**Actor**: " gastownd-test-actor) lines))
          (should (cl-some (lambda (line) (string-search "gt-d1g" line)) lines))
          (should (cl-some (lambda (line) (string-search "prompt_input_exit" line)) lines))))
      ;; RET on an issue id there: who touched it.
      (with-current-buffer "*gastownd-digest*"
        (goto-char (point-min))
        (search-forward "gt-d1g")
        (call-interactively (key-binding (kbd "RET"))))
      (gastownd-test--wait "the who buffer"
                           (lambda () (gastownd-test--has (get-buffer "*gastownd-who*")
                                                          "gt-d1g: 1 change")))
      ;; An open session has no digest yet: its wisp.
      (with-current-buffer buffer
        (goto-char (point-min))
        (search-forward (substring gastownd-test-open-session 0 8))
        (call-interactively (key-binding (kbd "RET"))))
      (let ((name "*gastownd-digest*"))
        (gastownd-test--wait "the open session's buffer"
                             (lambda () (gastownd-test--has (get-buffer name) "no digest yet")))
        (should (gastownd-test--has (get-buffer name) "no digest yet")))
      ;; s runs gastownctl seance in a terminal (here Claude Code is not installed).
      (let ((term-buffer (with-current-buffer buffer
                           (goto-char (point-min))
                           (search-forward short)
                           (call-interactively (key-binding (kbd "s"))))))
        (should (buffer-live-p term-buffer))
        (should (eq (buffer-local-value 'major-mode term-buffer) 'term-mode))
        (gastownd-test--wait "seance's answer" (lambda () (gastownd-test--has term-buffer "gastownctl:")))
        (should (gastownd-test--has term-buffer "'claude' is not on PATH")))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-who-shows-bd-close-attribution ()
  (gastownd-test--with-fast-settings
    (gastownd-test--ctl "hook" gastownd-test-session "start")
    (gastownd-test--ctl "hook" gastownd-test-session "close" "gt-w7x")
    ;; A buffer inside the town: its directory, not GT_TOWN_ROOT, names the town.
    (let ((dir (expand-file-name "gastown/crew/max/" (getenv "GASTOWND_TEST_TOWN")))
          (process-environment (cons "GT_TOWN_ROOT=/nonexistent/town" process-environment)))
      (make-directory dir t)
      (with-temp-buffer
        (setq default-directory dir)
        (insert "the fix for gt-w7x landed")
        (search-backward "w7x")
        (call-interactively #'gastownd-who))
      (gastownd-test--wait "the who buffer" (lambda () (get-buffer "*gastownd-who*"))))
    (let ((lines (gastownd-test--lines (get-buffer "*gastownd-who*"))))
      (should (equal (car lines) "gt-w7x: 1 change"))
      (should (string-match-p
               (concat "\\`closed   [0-9-]+ [0-9:]+  " (substring gastownd-test-session 0 8)
                       "  " (regexp-quote gastownd-test-actor) "  (session open)\\'")
               (nth 1 lines))))
    (should (get-buffer-window "*gastownd-who*"))
    (kill-buffer "*gastownd-who*")
    (gastownd-who "gt-none")
    (gastownd-test--wait "the who buffer" (lambda () (get-buffer "*gastownd-who*")))
    (should (equal (gastownd-test--lines (get-buffer "*gastownd-who*"))
                   '("no session is recorded as touching gt-none")))
    (gastownd-test--no-errors)))

(ert-deftest gastownd-test-daemon-stopped-one-message ()
  (gastownd-test--with-fast-settings
    (let ((buffer (gastownd-test--open-feed)))
      (gastownd-test--ctl "stop")
      (gastownd-test--wait "the feed to notice" (lambda () gastownd-test--messages))
      (gastownd-test--sleep 1.0)          ; several reconnection attempts
      (should (equal (gastownd-test--messages)
                     '("gastownd: the daemon went away; the feed will resume when it is back")))
      (should (= 1 (gastownd-test--count buffer "reconnecting"))))
    (setq gastownd-test--messages nil)
    (gastownd-sessions)
    (gastownd-test--wait "a message" (lambda () gastownd-test--messages))
    (gastownd-test--sleep 0.2)
    (should (= 1 (length gastownd-test--messages)))
    (should (string-match-p
             "\\`gastownd: the daemon is not running (nothing listens on /.+\\.sock)\\'"
             (car gastownd-test--messages)))
    (gastownd-test--no-errors)))

(ert-deftest gastownd-test-feed-resumes-after-restart ()
  (gastownd-test--with-fast-settings
    (let ((buffer (gastownd-test--open-feed)))
      (gastownd-test--ctl "emit" "nudge" "mayor" "mark=A")
      (gastownd-test--wait "A" (lambda () (gastownd-test--has buffer "mark=A")))
      (gastownd-test--ctl "stop")
      (gastownd-test--wait "the feed to notice" (lambda () (gastownd-test--has buffer "reconnecting")))
      (gastownd-test--ctl "append" "B" "3")   ; gt writes while the daemon is down
      (gastownd-test--ctl "start")
      (gastownd-test--wait "the feed to reconnect" (lambda () (gastownd-test--has buffer "reconnected")))
      (gastownd-test--ctl "emit" "nudge" "mayor" "mark=C")
      (gastownd-test--wait "C" (lambda () (gastownd-test--has buffer "mark=C")))
      (gastownd-test--once-each buffer '("mark=A" "reconnecting" "reconnected"
                                         "mark=B-1" "mark=B-2" "mark=B-3" "mark=C"))
      (should (= 5 (length (gastownd-test--event-lines buffer))))
      (should (= 1 (length gastownd-test--messages)))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-feed-resyncs-when-the-log-was-replaced ()
  (gastownd-test--with-fast-settings
    (let ((buffer (gastownd-test--open-feed)))
      (gastownd-test--ctl "emit" "nudge" "mayor" "mark=A")
      (gastownd-test--wait "A" (lambda () (gastownd-test--has buffer "mark=A")))
      (gastownd-test--ctl "stop")
      (gastownd-test--ctl "replace-log" "R" "2") ; a new file while down: a new epoch
      (gastownd-test--ctl "start")
      (gastownd-test--wait "the resync notice" (lambda () (gastownd-test--has buffer "resync:")))
      (gastownd-test--wait "the new log's lines" (lambda () (gastownd-test--has buffer "mark=R-2")))
      (gastownd-test--ctl "emit" "nudge" "mayor" "mark=C")
      (gastownd-test--wait "C" (lambda () (gastownd-test--has buffer "mark=C")))
      (gastownd-test--once-each buffer '("mark=A" "resync:" "mark=R-1" "mark=R-2" "mark=C"))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-feed-after-a-full-prune ()
  ;; Every line pruned, then new ones: the feed opens, subscribes once and shows
  ;; each event once, even where the daemon answers its own head cursor with a
  ;; resync.
  (gastownd-test--with-fast-settings
    (gastownd-test--ctl "append" "OLD" "2" "--old")
    (gastownd-test--ctl "prune")
    (gastownd-test--ctl "emit" "nudge" "mayor" "mark=N1")
    (let ((buffer (gastownd-test--open-feed)))
      (gastownd-test--ctl "emit" "nudge" "mayor" "mark=N2")
      (gastownd-test--wait "N2" (lambda () (gastownd-test--has buffer "mark=N2")))
      (gastownd-test--sleep 0.3)
      (gastownd-test--once-each buffer '("mark=N1" "mark=N2"))
      (should (= 0 (gastownd-test--count buffer "resync")))
      (should-not (gastownd-test--has buffer "mark=OLD"))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-mode-line-counts-open-sessions ()
  (gastownd-test--with-fast-settings
    (let ((gastownd-mode-line-interval 0.05))
      (gastownd-mode-line-mode 1)
      (should (memq 'gastownd--mode-line-string global-mode-string))
      (gastownd-test--wait "the first count"
                           (lambda () (equal gastownd--mode-line-string " gastownd: 0 open")))
      (gastownd-test--ctl "hook" gastownd-test-session "start")
      (gastownd-test--wait "one open session"
                           (lambda () (equal gastownd--mode-line-string " gastownd: 1 open")))
      (gastownd-test--ctl "stop")
      (gastownd-test--wait "down"
                           (lambda () (equal gastownd--mode-line-string " gastownd: down")))
      (gastownd-mode-line-mode -1)
      (should-not (memq 'gastownd--mode-line-string global-mode-string))
      (should-not gastownd-test--messages))))

;;;; Issue 20: what a daily user sees and does (each failed before its fix)

(defconst gastownd-test-other "0be11a2b-3c4d-4e5f-9a0b-1c2d3e4f5a6b")
(defconst gastownd-test-third "c0ffee00-1111-4222-8333-444455556666")

(defun gastownd-test--open-sessions (text)
  "Open the sessions buffer and wait until it shows TEXT."
  (let ((buffer (gastownd-sessions)))
    (gastownd-test--wait "the sessions" (lambda () (gastownd-test--has buffer text)))
    buffer))

(defun gastownd-test--digest-has (text)
  "Whether the digest buffer shows TEXT."
  (gastownd-test--has (get-buffer gastownd-digest-buffer-name) text))

(ert-deftest gastownd-test-sessions-sorted-by-the-start-they-show ()
  (gastownd-test--with-fast-settings
    (gastownd-test--ctl "sample")
    (let* ((buffer (gastownd-test--open-sessions "a830aa9f"))
           (starts (with-current-buffer buffer
                     (mapcar (lambda (entry) (substring-no-properties (aref (cadr entry) 0)))
                             tabulated-list-entries))))
      (should (equal (car (aref tabulated-list-format 0)) "Last start"))
      (should (> (length starts) 50))
      (cl-loop for (newer older) on starts while older
               do (should (equal (list newer older (not (string< newer older)))
                                 (list newer older t))))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-payloads-shown-as-the-cli-shows-them ()
  (gastownd-test--with-fast-settings
    (let ((buffer (gastownd-test--open-feed)))
      (gastownd-test--ctl
       "emit-json" "mail" "mayor"
       "{\"list\":[1,2],\"none\":null,\"objs\":[{\"a\":1}],\"ok\":false,\"obj\":{\"to\":\"a/b\"},\"empty\":{},\"nil\":[]}")
      (gastownd-test--wait "the mail" (lambda () (gastownd-test--has buffer "list=")))
      (should (string-search
               "empty={} list=[1,2] nil=[] none=null obj={\"to\":\"a/b\"} objs=[{\"a\":1}] ok=false"
               (gastownd-test--line buffer "list=")))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-hostile-text-keeps-one-event-a-line ()
  ;; Any writer's text: a newline, ESC (an OSC 52 clipboard write), CR, NUL, a C1 CSI
  ;; and a bidi override, in the actor, a payload key and values.
  (gastownd-test--with-fast-settings
    (let ((buffer (gastownd-test--open-feed)))
      (gastownd-test--ctl
       "emit-json" "mail" "evil\nactor\e]52;c;aGk=\a\r"
       "{\"k\\ney\":\"a\\u0000b\",\"csi\":\"\\u009b2J\",\"bidi\":\"\\u202eevil\",\"mark\":\"hostile-row\"}")
      (gastownd-test--wait "the mail" (lambda () (gastownd-test--has buffer "hostile-row")))
      (let ((line (gastownd-test--line buffer "hostile-row")))
        (should (string-search "evil⏎actor\\u001b]52;c;aGk=\\u0007\\u000d" line))
        (should (string-search "bidi=\\u202eevil csi=\\u009b2J k⏎ey=a\\u0000b" line))
        (should-not (string-match-p "[\u0000-\u001f\u007f-\u009f\u202e]" line)))
      (with-current-buffer buffer
        (should (= 1 (how-many "hostile-row" (point-min) (point-max))))
        (should-not (save-excursion (goto-char (point-min)) (search-forward "evil\n" nil t))))
      ;; A 100 KB actor is cut like a payload value, as gastownctl cuts it.
      (let ((long (make-string 100000 ?x)))
        (gastownd-test--ctl "emit-json" "mail" long "{\"mark\":\"long-row\"}"))
      (gastownd-test--wait "the long one" (lambda () (gastownd-test--has buffer "long-row")))
      (should (< (length (gastownd-test--line buffer "long-row")) 400))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-who-rows-align-and-g-refreshes ()
  (gastownd-test--with-fast-settings
    (gastownd-test--ctl "ctl" "session" "start" "--session" gastownd-test-session
                        "--actor" "gastown/polecats/nux")
    (gastownd-test--ctl "ctl" "session" "start" "--session" gastownd-test-other "--actor" "mayor")
    (gastownd-test--ctl "ctl" "attribute" "gt-w7x" "--session" gastownd-test-session
                        "--action" "reopened")
    (gastownd-test--ctl "ctl" "attribute" "gt-w7x" "--session" gastownd-test-other
                        "--action" "closed")
    (gastownd-who "gt-w7x")
    (gastownd-test--wait "the who buffer" (lambda () (get-buffer gastownd-who-buffer-name)))
    (let* ((who (get-buffer gastownd-who-buffer-name))
           (lines (gastownd-test--lines who)))
      (should (equal (car lines) "gt-w7x: 2 changes"))
      (should (= (string-search "  20" (nth 1 lines)) (string-search "  20" (nth 2 lines))))
      (should (= (string-search "(session open)" (nth 1 lines))
                 (string-search "(session open)" (nth 2 lines))))
      ;; g asks again (it used to say the buffer has no file).
      (gastownd-test--ctl "ctl" "attribute" "gt-w7x" "--session" gastownd-test-other
                          "--action" "updated")
      (with-current-buffer who
        (call-interactively (key-binding (kbd "g"))))
      (gastownd-test--wait "the refreshed who"
                           (lambda () (gastownd-test--has who "gt-w7x: 3 changes")))
      ;; RET on a row opens its session (open: its wisp).
      (with-current-buffer who
        (goto-char (point-min))
        (forward-line 1)
        (call-interactively (key-binding (kbd "RET"))))
      (gastownd-test--wait "the session"
                           (lambda () (gastownd-test--digest-has "# Open session")))
      ;; g in the digest buffer asks again too.
      (with-current-buffer gastownd-digest-buffer-name
        (let ((inhibit-read-only t)) (erase-buffer))
        (call-interactively (key-binding (kbd "g"))))
      (gastownd-test--wait "the refreshed digest"
                           (lambda () (gastownd-test--digest-has "# Open session")))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-logged-session-shows-its-lines ()
  (gastownd-test--with-fast-settings
    (gastownd-test--ctl "sample")
    (let* ((buffer (gastownd-test--open-sessions "logged"))
           (line (gastownd-test--line buffer " logged "))
           (short (progn (string-match "\\([0-9a-f]\\{8\\}\\) +logged" line)
                         (match-string 1 line))))
      (with-current-buffer buffer
        (goto-char (point-min))
        (search-forward short)
        (setq gastownd-test--messages nil)
        (call-interactively (key-binding (kbd "RET"))))
      (gastownd-test--wait "the log's lines"
                           (lambda () (gastownd-test--digest-has (concat "# Logged session " short))))
      (should (gastownd-test--digest-has "known only from gt's lines"))
      (should (gastownd-test--digest-has "session_start"))
      (should (gastownd-test--digest-has (concat "session_id=" short)))
      (should-not gastownd-test--messages)
      ;; One digest buffer, reused.
      (with-current-buffer buffer
        (goto-char (point-max))
        (forward-line -1)
        (call-interactively (key-binding (kbd "RET"))))
      (gastownd-test--wait "another session"
                           (lambda () (not (gastownd-test--digest-has
                                            (concat "# Logged session " short)))))
      (should (= 1 (cl-count-if (lambda (b) (string-prefix-p "*gastownd-digest" (buffer-name b)))
                                (buffer-list))))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-refresh-keeps-point-on-its-session ()
  (gastownd-test--with-fast-settings
    (gastownd-test--ctl "hook" gastownd-test-session "start")
    (gastownd-test--ctl "hook" gastownd-test-session "close" "gt-c9x")
    ;; (Another actor: a hook start of the same actor would supersede the first.)
    (gastownd-test--ctl "ctl" "session" "start" "--session" gastownd-test-other
                        "--actor" "gastown/crew/max")
    (let ((buffer (gastownd-test--open-sessions (substring gastownd-test-session 0 8)))
          (short (substring gastownd-test-session 0 8)))
      ;; An open session's row says what it has changed so far.
      (gastownd-test--wait "its changes"
                           (lambda () (gastownd-test--has buffer "1 step: closed gt-c9x")))
      (with-current-buffer buffer
        (goto-char (point-min))
        (search-forward short))
      ;; A new session goes on top: the auto-refresh on its push, then g.
      (gastownd-test--ctl "ctl" "session" "start" "--session" gastownd-test-third "--actor" "mayor")
      (gastownd-test--wait "the auto-refresh"
                           (lambda () (gastownd-test--has buffer (substring gastownd-test-third 0 8))))
      (with-current-buffer buffer
        (should (equal (tabulated-list-get-id) gastownd-test-session))
        (revert-buffer)
        (gastownd-test--sleep 0.3)
        (should (equal (tabulated-list-get-id) gastownd-test-session))
        ;; Filters, shown in the mode line.
        ;; S sorts by the column at point (tabulated-list), f filters by state.
        (should (eq (key-binding (kbd "S")) 'tabulated-list-sort))
        (call-interactively (key-binding (kbd "f")))
        (gastownd-test--sleep 0.3)
        (should (equal mode-name "gastownd-sessions[state=open]")))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-all-nodes-feed-without-federation-tags-no-line ()
  (gastownd-test--with-fast-settings
    (let ((buffer (gastownd-test--open-feed nil t)))
      (gastownd-test--ctl "emit" "mail" "mayor" "subject=whose")
      (gastownd-test--wait "the mail" (lambda () (gastownd-test--has buffer "subject=whose")))
      (should-not (string-search "mayor@" (gastownd-test--line buffer "subject=whose")))
      (with-current-buffer buffer
        (should (equal mode-name "gastownd-feed[all-nodes]")))
      (gastownd-test--no-errors))))

(ert-deftest gastownd-test-feed-types-checked-completed-and-comma-separated ()
  (gastownd-test--with-fast-settings
    (should-not (gastownd-feed '("slingg")))
    (should-not gastownd--the-feed)
    (should (string-match-p "\\`gastownd: unknown event type slingg (known: .*sling.*)\\'"
                            (car (gastownd-test--messages))))
    (should (member "sling" (all-completions "sl" (gastownd--known-types))))
    (gastownd-test--open-feed '("sling,done"))
    (should (equal (gastownd--feed-types gastownd--the-feed) '("sling" "done")))
    (with-current-buffer (gastownd--feed-buffer gastownd--the-feed)
      (should (equal mode-name "gastownd-feed[sling done]")))
    ;; Session ids complete too (those seen).
    (gastownd-test--ctl "hook" gastownd-test-session "start")
    (gastownd-test--open-sessions (substring gastownd-test-session 0 8))
    (should (equal (all-completions "5e" gastownd--session-ids) (list gastownd-test-session)))
    (gastownd-test--no-errors)))

(ert-deftest gastownd-test-feed-waits-then-ret-opens-the-session-and-keys-are-listed ()
  (gastownd-test--with-fast-settings
    (let ((buffer (gastownd-feed)))
      (should (equal (gastownd-test--lines buffer) (list gastownd-feed-waiting)))
      (gastownd-test--wait "the empty feed" (lambda () (gastownd-test--has buffer "no events yet")))
      (gastownd-test--ctl "hook" gastownd-test-session "start")
      (gastownd-test--wait "the start" (lambda () (gastownd-test--has buffer "session_start")))
      (should-not (gastownd-test--has buffer "no events yet"))
      (with-current-buffer buffer
        (goto-char (point-min))
        (search-forward "session_start")
        (should (eq (get-text-property (match-beginning 0) 'font-lock-face) 'gastownd-type))
        (should (eq (face-attribute 'gastownd-type :inherit) 'font-lock-type-face))
        (should (eq (face-attribute 'gastownd-time :inherit) 'font-lock-comment-face))
        (call-interactively (key-binding (kbd "RET"))))
      (gastownd-test--wait "the session's wisp"
                           (lambda () (gastownd-test--digest-has gastownd-test-session)))
      ;; ? lists the keys, in every buffer of the package.
      (dolist (mode '(gastownd-feed-mode gastownd-sessions-mode gastownd-view-mode))
        (with-temp-buffer
          (funcall mode)
          (should (eq (key-binding (kbd "?")) 'describe-mode))
          (describe-mode)
          (with-current-buffer "*Help*"
            (should (string-search "RET" (buffer-string))))))
      (gastownd-test--no-errors))))

(provide 'gastownd-test)
;;; gastownd-test.el ends here
